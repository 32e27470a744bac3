"""greedy_decode and beam_search: beam 1 == greedy, beam >= greedy, lengths, EOS, padding
invariance, a model that learns to copy / reverse, plot_attention, and bad input."""
import math

import pytest
import torch

import fastrnn
from fastrnn import AttentionDecoder, Encoder, beam_search, greedy_decode, plot_attention
from fastrnn.nn.decoding import length_penalty, max_lengths

PAD, BOS, EOS = 0, 1, 2
V = 17




def _models(cell="gru", attention="additive", eos_bias=0.0, seed=0, dtype=torch.float32):
    """A random model whose choices vary with the input and the step (weights scaled up, so
    untrained outputs are not one constant token); eos_bias shifts EOS's logit so that
    sentences end at varied steps, some by EOS and some at the maximum length."""
    torch.manual_seed(seed)
    M = 10 if attention == "dot" else 12
    enc = Encoder(V, 8, M // 2, num_layers=2, cell=cell, dec_hidden_size=10, dec_num_layers=2)
    dec = AttentionDecoder(V, 8, 10, M, num_layers=2, cell=cell, attention=attention)
    with torch.no_grad():
        for name, p in dec.named_parameters():
            if not name.startswith("out."):
                p.mul_(3.0)
        dec.out.weight.mul_(4.0)
        dec.out.bias[EOS] += eos_bias
    return enc.to(dtype).eval(), dec.to(dtype).eval()


def _batch(B, S, seed=1, lo=1):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(lo, S + 1, (B,), generator=g)
    lengths[0] = S
    src = torch.randint(3, V, (B, S), generator=g)
    src[torch.arange(S).unsqueeze(0) >= lengths.unsqueeze(1)] = PAD
    return src, lengths


def _steps(res, maxlen):
    """Tokens produced per sentence, EOS included: the length in the penalty."""
    return torch.minimum(res.lengths + 1, maxlen)


def _check_well_formed(res, src, lengths, a=1.5, b=5):
    B, S = src.shape
    maxlen = max_lengths(lengths, a, b)
    L = res.tokens.shape[1]
    assert res.tokens.dtype == torch.long and res.tokens.shape == (B, L)
    assert res.lengths.shape == (B,) and int(res.lengths.max()) == L
    assert (res.lengths <= maxlen).all()
    pos = torch.arange(L).unsqueeze(0)
    real = pos < res.lengths.unsqueeze(1)
    assert (res.tokens[~real] == PAD).all()
    assert not (res.tokens[real] == EOS).any() and not (res.tokens[real] == PAD).any()
    if res.attention is not None:
        assert res.attention.shape == (B, L, S)
        torch.testing.assert_close(res.attention.sum(-1), real.to(res.attention.dtype))
        src_pad = torch.arange(S).unsqueeze(0) >= lengths.unsqueeze(1)
        assert (res.attention.masked_select(src_pad.unsqueeze(1).expand_as(res.attention)) == 0).all()


@pytest.mark.parametrize("cell,attention,eos_bias", [
    pytest.param("gru", "additive", 1.0, id="gru-additive"),
    pytest.param("lstm", "general", -0.5, id="lstm-general"),
    pytest.param("gru", None, 3.0, id="gru-noattn"),
    pytest.param("lstm", "dot", 1.0, id="lstm-dot"),
])
def test_beam_size_1_is_greedy(cell, attention, eos_bias):
    enc, dec = _models(cell, attention, eos_bias=eos_bias)
    src, lengths = _batch(7, 6)
    g = greedy_decode(enc, dec, src, lengths, BOS, EOS)
    b = beam_search(enc, dec, src, lengths, BOS, EOS, beam_size=1, alpha=0.6)
    _check_well_formed(g, src, lengths)
    maxlen = max_lengths(lengths, 1.5, 5)
    assert 0 < int((g.lengths < maxlen).sum()) < 7, "the test needs sentences ending both ways"
    torch.testing.assert_close(b.tokens, g.tokens, rtol=0, atol=0)
    torch.testing.assert_close(b.lengths, g.lengths, rtol=0, atol=0)
    want = (g.scores.double() / length_penalty(_steps(g, maxlen), 0.6)).float()
    torch.testing.assert_close(b.scores, want, rtol=1e-5, atol=1e-5)
    if attention is None:
        assert g.attention is None and b.attention is None
    else:
        torch.testing.assert_close(b.attention, g.attention, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("k", [2, 4, 6])
def test_beam_score_at_least_greedy(k):
    enc, dec = _models("lstm", "general", eos_bias=-0.5, seed=4)
    src, lengths = _batch(12, 7, seed=5)
    g = greedy_decode(enc, dec, src, lengths, BOS, EOS)
    b = beam_search(enc, dec, src, lengths, BOS, EOS, beam_size=k, alpha=0.6)
    _check_well_formed(b, src, lengths)
    g_norm = (g.scores.double() / length_penalty(_steps(g, max_lengths(lengths, 1.5, 5)), 0.6)).float()
    assert (b.scores >= g_norm - 1e-5).all()
    assert (b.scores > g_norm + 1e-3).any(), "beam search never beat greedy: a weak test case"


def test_beam_scores_are_the_model_log_probs():
    """Rescoring the returned hypotheses with teacher forcing gives back the beam's scores."""
    enc, dec = _models("gru", "additive", eos_bias=1.0, seed=6, dtype=torch.float64)
    src, lengths = _batch(6, 5, seed=7)
    res = beam_search(enc, dec, src, lengths, BOS, EOS, beam_size=3, alpha=0.8)
    maxlen = max_lengths(lengths, 1.5, 5)
    for i in range(6):
        n = int(res.lengths[i])
        ended = n < int(maxlen[i])
        toks = res.tokens[i, :n].tolist() + ([EOS] if ended else [])
        tgt_in = torch.tensor([[BOS] + toks[:-1]])
        logp = torch.log_softmax(dec(tgt_in, enc(src[i:i + 1], lengths[i:i + 1]))[0], -1)[0]
        total = float(logp.detach()[torch.arange(len(toks)), torch.tensor(toks)].sum())
        assert math.isclose(float(res.scores[i]), total / length_penalty(len(toks), 0.8),
                            rel_tol=1e-5, abs_tol=1e-5)


@pytest.mark.parametrize("cell,attention,eos_bias", [
    pytest.param("gru", "additive", 1.0, id="gru-additive"),
    pytest.param("lstm", None, 1.5, id="lstm-noattn"),
])
def test_beam_with_several_alphas_gives_each_alphas_own_search(cell, attention, eos_bias):
    """alpha=[...] returns, from one search, exactly what beam_search(alpha=a) returns for each a;
    and the alphas pick different hypotheses (a larger alpha, longer ones) on this batch."""
    enc, dec = _models(cell, attention, eos_bias=eos_bias, seed=8)
    src, lengths = _batch(16, 7, seed=9)
    alphas = [0.0, 0.6, 2.0, 5.0]
    many = beam_search(enc, dec, src, lengths, BOS, EOS, beam_size=4, alpha=alphas)
    assert isinstance(many, tuple) and len(many) == len(alphas)
    for a, res in zip(alphas, many):
        one = beam_search(enc, dec, src, lengths, BOS, EOS, beam_size=4, alpha=a)
        assert isinstance(one, fastrnn.DecodeResult)
        _check_well_formed(res, src, lengths)
        for got, want in zip(res, one):
            if want is None:
                assert got is None
            else:
                torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert not torch.equal(many[0].lengths, many[-1].lengths), "the alphas chose alike: a weak test case"
    assert int(many[-1].lengths.sum()) > int(many[0].lengths.sum())
    one_list = beam_search(enc, dec, src, lengths, BOS, EOS, beam_size=4, alpha=(0.6,))
    assert isinstance(one_list, tuple) and len(one_list) == 1
    torch.testing.assert_close(one_list[0].tokens, many[1].tokens, rtol=0, atol=0)


@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_max_length_without_eos(search):
    enc, dec = _models(eos_bias=-1e4)                           # EOS never wins
    src, lengths = _batch(5, 6, seed=8)
    a, b = 0.5, 2
    if search == "greedy":
        res = greedy_decode(enc, dec, src, lengths, BOS, EOS, max_len_a=a, max_len_b=b)
    else:
        res = beam_search(enc, dec, src, lengths, BOS, EOS, beam_size=3, max_len_a=a, max_len_b=b)
    want = torch.tensor([math.ceil(a * n + b) for n in lengths.tolist()])
    torch.testing.assert_close(res.lengths, want, rtol=0, atol=0)
    _check_well_formed(res, src, lengths, a, b)


@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_immediate_eos_gives_empty_output(search):
    enc, dec = _models(eos_bias=1e4)                            # EOS always wins
    src, lengths = _batch(3, 4)
    fn = greedy_decode if search == "greedy" else beam_search
    res = fn(enc, dec, src, lengths, BOS, EOS)
    assert res.tokens.shape == (3, 0) and (res.lengths == 0).all()
    assert torch.isfinite(res.scores).all() and (res.scores <= 0).all()


@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_batch_equals_one_by_one(search):
    enc, dec = _models("lstm", "general", eos_bias=-0.5, seed=4)
    src, lengths = _batch(5, 6, seed=10)
    fn = greedy_decode if search == "greedy" else beam_search
    res = fn(enc, dec, src, lengths, BOS, EOS)
    for i in range(5):
        n = int(lengths[i])
        one = fn(enc, dec, src[i:i + 1, :n], lengths[i:i + 1], BOS, EOS)
        m = int(one.lengths[0])
        assert int(res.lengths[i]) == m
        assert res.tokens[i, :m].tolist() == one.tokens[0].tolist()
        torch.testing.assert_close(res.scores[i], one.scores[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(res.attention[i, :m, :n], one.attention[0], rtol=1e-5, atol=1e-6)


def test_max_lengths_formula():
    lengths = torch.tensor([1, 4, 10, 7])
    assert max_lengths(lengths, 1.5, 5).tolist() == [7, 11, 20, 16]
    assert max_lengths(lengths, 1.1, 0).tolist() == [2, 5, 11, 8]    # 1.1 * 10 is 11, not 12
    assert max_lengths(lengths, 0, 0).tolist() == [1, 1, 1, 1]


# -- learning ------------------------------------------------------------------------------------

def _task_data(n, task, g, lo=3, hi=8, nsym=10):
    lengths = torch.randint(lo, hi + 1, (n,), generator=g)
    src = torch.randint(3, 3 + nsym, (n, hi), generator=g)
    src[torch.arange(hi).unsqueeze(0) >= lengths.unsqueeze(1)] = PAD
    tgt = src.clone()
    if task == "reverse":
        for i, m in enumerate(lengths.tolist()):
            tgt[i, :m] = src[i, :m].flip(0)
    return src, lengths, tgt


def _train(task, cell, steps, seed=0, batch=128):
    """Adam with a linearly decaying rate (the decay takes the last errors out quickly), then
    greedy exact match on 200 held-out sequences."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    nv = 13
    enc = Encoder(nv, 32, 32, num_layers=1, cell=cell, dec_hidden_size=64, dec_num_layers=1)
    dec = AttentionDecoder(nv, 32, 64, 64, num_layers=1, cell=cell, attention="general")
    params = list(enc.parameters()) + list(dec.parameters())
    opt = torch.optim.Adam(params, lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: max(0.05, 1 - i / steps))
    rows = torch.arange(batch)
    for _ in range(steps):
        src, lengths, tgt = _task_data(batch, task, g)
        tgt_out = torch.cat([tgt, torch.full((batch, 1), PAD)], 1)
        tgt_out[rows, lengths] = EOS
        tgt_in = torch.cat([torch.full((batch, 1), BOS), tgt], 1)
        logits, _ = dec(tgt_in, enc(src, lengths))
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, nv), tgt_out.reshape(-1),
                                                 ignore_index=PAD)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
    enc.eval(), dec.eval()
    src, lengths, tgt = _task_data(200, task, torch.Generator().manual_seed(seed + 12345))
    res = greedy_decode(enc, dec, src, lengths, BOS, EOS)
    exact = sum(int(res.lengths[i]) == int(lengths[i]) and
                res.tokens[i, :int(lengths[i])].tolist() == tgt[i, :int(lengths[i])].tolist()
                for i in range(200)) / 200
    return exact, enc, dec, (src, lengths)


def test_learns_to_copy():
    exact, enc, dec, (src, lengths) = _train("copy", "gru", steps=200)
    assert exact >= 0.95, f"exact match {exact:.1%} on held-out sequences"
    # the learned attention of a copy is (nearly) the diagonal
    res = greedy_decode(enc, dec, src[:20], lengths[:20], BOS, EOS)
    for i in range(20):
        m = int(lengths[i])
        if int(res.lengths[i]) == m:
            assert (res.attention[i, :m, :m].argmax(-1) == torch.arange(m)).float().mean() >= 0.8


@pytest.mark.slow
@pytest.mark.parametrize("task,cell", [("reverse", "gru"), ("copy", "lstm")])
def test_learns_task_slow(task, cell):
    exact, *_ = _train(task, cell, steps=300)
    assert exact >= 0.95, f"{task} with {cell}: exact match {exact:.1%} on held-out sequences"


def test_learns_to_reverse_with_beam():
    exact, enc, dec, (src, lengths) = _train("reverse", "lstm", steps=200, seed=1)
    assert exact >= 0.95, f"exact match {exact:.1%} on held-out sequences"
    res = beam_search(enc, dec, src, lengths, BOS, EOS, beam_size=3)
    want = [src[i, :int(lengths[i])].flip(0).tolist() for i in range(len(lengths))]
    got = [res.tokens[i, :int(res.lengths[i])].tolist() for i in range(len(lengths))]
    assert sum(a == b for a, b in zip(got, want)) / len(want) >= 0.95


# -- plot and errors -------------------------------------------------------------------------

def test_plot_attention_writes_png(tmp_path):
    w = torch.softmax(torch.randn(4, 6), -1)
    path = plot_attention(w, list("abcdef"), ["w", "x", "y", "z"], tmp_path / "sub" / "attn.png")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50
    assert img[..., :3].std() > 0.05                           # not a blank canvas


def test_plot_attention_bad_input(tmp_path):
    w = torch.rand(3, 4)
    with pytest.raises(ValueError, match=r"\[L, S\]"):
        plot_attention(w[0], list("abcd"), list("xyz"), tmp_path / "a.png")
    with pytest.raises(ValueError, match="src_tokens"):
        plot_attention(w, list("abc"), list("xyz"), tmp_path / "a.png")
    with pytest.raises(ValueError, match="tgt_tokens"):
        plot_attention(w, list("abcd"), list("xy"), tmp_path / "a.png")
    with pytest.raises(ValueError, match="png"):
        plot_attention(w, list("abcd"), list("xyz"), tmp_path / "a.jpg")


def test_decoding_bad_input():
    enc, dec = _models()
    src, lengths = _batch(2, 4)
    with pytest.raises(ValueError, match="eos"):
        greedy_decode(enc, dec, src, lengths, BOS, V)
    with pytest.raises(ValueError, match="bos"):
        beam_search(enc, dec, src, lengths, -1, EOS)
    with pytest.raises(ValueError, match="beam_size"):
        beam_search(enc, dec, src, lengths, BOS, EOS, beam_size=0)
    with pytest.raises(ValueError, match="beam_size"):
        beam_search(enc, dec, src, lengths, BOS, EOS, beam_size=V)
    for bad in (float("nan"), -0.5, [0.6, float("inf")], [], True, "0.6"):
        with pytest.raises(ValueError, match="alpha must be a"):
            beam_search(enc, dec, src, lengths, BOS, EOS, alpha=bad)
    with pytest.raises(ValueError, match="max_len_a"):
        greedy_decode(enc, dec, src, lengths, BOS, EOS, max_len_a=-1)
    with pytest.raises(ValueError, match="lengths"):
        greedy_decode(enc, dec, src, lengths[:1], BOS, EOS)
    with pytest.raises(TypeError, match="fastrnn.Encoder"):
        greedy_decode(dec, enc, src, lengths, BOS, EOS)
    with pytest.raises(TypeError, match="src"):
        greedy_decode(enc, dec, src.float(), lengths, BOS, EOS)
    with pytest.raises(ValueError, match="cuda_graph=True needs CUDA tensors"):
        greedy_decode(enc, dec, src, lengths, BOS, EOS, cuda_graph=True)
    with pytest.raises(TypeError, match="cuda_graph"):
        greedy_decode(enc, dec, src, lengths, BOS, EOS, cuda_graph="yes")


@pytest.mark.parametrize("cell,attention", [("gru", "general"), ("lstm", "additive"), ("gru", None)])
def test_greedy_dropping_finished_rows_gives_the_full_batchs_result(monkeypatch, cell, attention):
    """Once at most COMPACT_AT of the rows run, the others leave the batch (repeatedly, as more
    finish): the tokens, lengths, scores and attention are those of decoding the whole batch."""
    from fastrnn.nn import decoding

    enc, dec = _models(cell, attention, seed=3)
    src, lengths = _batch(13, 11, seed=4)    # outputs of 7 to 22 tokens
    sizes = []
    real_one = decoding._Greedy._one

    def one(self, d, state):
        sizes.append(self.prev.shape[0])
        return real_one(self, d, state)

    monkeypatch.setattr(decoding._Greedy, "_one", one)
    full = greedy_decode(enc, dec, src, lengths, BOS, EOS)
    monkeypatch.setattr(decoding, "COMPACT_AT", 0.0)
    sizes_full = list(sizes)
    sizes.clear()
    whole = greedy_decode(enc, dec, src, lengths, BOS, EOS)
    assert set(sizes) == {13}
    assert len(set(sizes_full)) >= 3 and sizes_full[0] == 13 and min(sizes_full) < 13   # compacted, twice
    assert len(sizes_full) == len(sizes)
    _check_well_formed(full, src, lengths)
    assert torch.equal(full.tokens, whole.tokens) and torch.equal(full.lengths, whole.lengths)
    torch.testing.assert_close(full.scores, whole.scores)
    if attention is None:
        assert full.attention is None and whole.attention is None
    else:
        torch.testing.assert_close(full.attention, whole.attention)


def test_greedy_leaves_the_encoder_output_alone():
    # Greedy decoding updates its decoder state in place (so a CUDA graph can replay the step):
    # on its own copies, never on the encoder's final state it starts from.
    from fastrnn.nn.decoding import _greedy

    for cell in ("gru", "lstm"):
        enc, dec = _models(cell)
        src, lengths = _batch(3, 6)
        with torch.inference_mode():
            enc_out = enc(src, lengths)
            hidden = [h.clone() for h in (enc_out.hidden if cell == "lstm" else (enc_out.hidden,))]
            res = _greedy(dec, enc_out, lengths, BOS, EOS, 1.5, 5)
            again = greedy_decode(enc, dec, src, lengths, BOS, EOS)
        for h, h0 in zip(enc_out.hidden if cell == "lstm" else (enc_out.hidden,), hidden):
            assert torch.equal(h, h0)
        assert torch.equal(res.tokens, again.tokens) and torch.equal(res.scores, again.scores)


def _fake_cuda_graphs(monkeypatch):
    """Stand-ins for the CUDA pieces of greedy_decode(cuda_graph=True): the warm-up runs the
    graph's steps, the capture records them without running them (as a real capture does) and
    each replay runs them. Returns the list of graphs captured."""
    import contextlib

    from fastrnn.nn import decoding

    class Graph:
        fn = None

        def replay(self):
            self.fn()

    class Stream:
        def __init__(self, device=None):
            pass

        def wait_stream(self, other):
            pass

    graphs, recording = [], []
    real_steps = decoding._Greedy.steps

    def steps(self, dec, k):
        if recording:
            graphs[-1].fn = lambda: real_steps(self, dec, k)
        else:
            real_steps(self, dec, k)

    @contextlib.contextmanager
    def capture(g):
        graphs.append(g)
        recording.append(True)
        try:
            yield
        finally:
            recording.clear()

    monkeypatch.setattr(decoding._Greedy, "steps", steps)
    monkeypatch.setattr(torch.cuda, "Stream", Stream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: Stream())
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "CUDAGraph", Graph)
    monkeypatch.setattr(torch.cuda, "graph", capture)
    monkeypatch.setattr(decoding, "_check_every", lambda device: 8)   # as on a GPU
    return graphs


def _graphed_equals_plain(enc, dec, src, lengths):
    from fastrnn.nn import decoding

    # the eager path without dropping finished rows: a graph keeps its batch (a smaller batch's
    # products may differ in the last bits, test_greedy_dropping_finished_rows_...)
    compact_at, decoding.COMPACT_AT = decoding.COMPACT_AT, 0.0
    try:
        with torch.inference_mode():
            enc_out = enc(src, lengths)
            plain = decoding._greedy(dec, enc_out, lengths, BOS, EOS, 1.5, 5)
            graphed = decoding._greedy(dec, enc_out, lengths, BOS, EOS, 1.5, 5, cuda_graph=True)
    finally:
        decoding.COMPACT_AT = compact_at
    for a, b in zip(graphed, plain):
        assert torch.equal(a, b)
    return plain, enc_out, graphed


def test_cuda_graph_bookkeeping_on_the_cpu(monkeypatch):
    # greedy_decode(cuda_graph=True)'s loop with stand-ins for the CUDA pieces: the warm-up, a
    # capture that runs nothing, the batch loaded again, then replays; the result must be the
    # plain loop's. The real capture runs in test_cuda_graph_greedy_matches_eager on a GPU.
    from fastrnn.nn import decoding

    graphs = _fake_cuda_graphs(monkeypatch)
    for cell in ("gru", "lstm"):
        enc, dec = _models(cell)
        src, lengths = _batch(5, 9, lo=2)
        plain, _, _ = _graphed_equals_plain(enc, dec, src, lengths)
        assert 1 < int(plain.lengths.max()) and int(plain.lengths.min()) < 19   # EOS and max length
    assert len(graphs) == 2                       # one capture per decoder and batch shape
    decoding.clear_cuda_graphs()


def test_cuda_graph_is_kept_per_batch_shape(monkeypatch):
    # A later batch of the same shapes replays the kept graph (its buffers loaded anew, nothing
    # of the last batch left in them), also one whose source and output lengths round up to the
    # same multiples of 8; another shape, a replaced weight or another decoder captures anew; at
    # most MAX_CUDA_GRAPHS shapes are kept per decoder, the oldest dropped.
    from torch import nn

    from fastrnn.nn import decoding

    graphs = _fake_cuda_graphs(monkeypatch)
    enc, dec = _models("lstm")
    plain1, first, graphed1 = _graphed_equals_plain(enc, dec, *_batch(5, 9, seed=1, lo=2))
    kept = [first.states.clone(), first.mask.clone()]
    assert len(graphs) == 1
    for seed in (2, 3):                           # new sentences, same B and S
        _graphed_equals_plain(enc, dec, *_batch(5, 9, seed=seed, lo=2))
    assert len(graphs) == 1
    for t, t0 in zip(first[:2], kept):            # later batches went into the graph's own buffers
        assert torch.equal(t, t0)
    for a, b in zip(graphed1, plain1):            # and left the first result alone
        assert torch.equal(a, b)
    with torch.no_grad():
        dec.out.bias.add_(0.5)                    # in place: same addresses, same graph
    _graphed_equals_plain(enc, dec, *_batch(5, 9, seed=4, lo=2))
    assert len(graphs) == 1
    dec.out.weight = nn.Parameter(dec.out.weight.detach() * 0.9)    # replaced: captured anew
    _graphed_equals_plain(enc, dec, *_batch(5, 9, seed=4, lo=2))
    assert len(graphs) == 2
    monkeypatch.setattr(decoding, "MAX_CUDA_GRAPHS", 2)
    _graphed_equals_plain(enc, dec, *_batch(3, 9, seed=5, lo=2))    # another B
    _graphed_equals_plain(enc, dec, *_batch(5, 7, seed=6, lo=2))    # another S
    assert len(graphs) == 4 and len(decoding._GRAPHS[dec]) == 2
    _graphed_equals_plain(enc, dec, *_batch(3, 9, seed=7, lo=2))    # still kept
    assert len(graphs) == 4
    _, dec2 = _models("lstm")
    _graphed_equals_plain(enc, dec2, *_batch(3, 9, seed=7, lo=2))
    assert len(graphs) == 5
    # sources of 5 and 7 tokens (padded to 8, at most 13 and 16 output tokens: 16) share a graph;
    # the attention comes back over each batch's own source length
    plain5, _, _ = _graphed_equals_plain(enc, dec2, *_batch(3, 5, seed=8, lo=2))
    plain7, _, _ = _graphed_equals_plain(enc, dec2, *_batch(3, 7, seed=9, lo=2))
    assert len(graphs) == 6
    assert plain5.attention.shape[2] == 5 and plain7.attention.shape[2] == 7
    fastrnn.clear_cuda_graphs(dec)                # the public name
    assert dec not in decoding._GRAPHS and dec2 in decoding._GRAPHS
    fastrnn.clear_cuda_graphs()
    assert len(decoding._GRAPHS) == 0


@pytest.mark.gpu
@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("attention", ["additive", "general", None])
def test_cuda_graph_greedy_matches_eager(cell, attention):
    # Steps replayed from a CUDA graph: the same tokens, lengths and scores as the eager loop,
    # with sentences that end by EOS at varied steps (1 to 14 on the CPU) and by their maximum
    # length (19 steps: past the every-8-steps check for finished batches). The second and third
    # batches replay the kept graph; the third comes after an in-place weight update.
    enc, dec = _models(cell, attention)
    enc, dec = enc.cuda(), dec.cuda()
    for seed in (1, 2, 3):
        if seed == 3:
            with torch.no_grad():
                dec.out.weight.mul_(0.5)
        src, lengths = _batch(5, 9, seed=seed, lo=2)
        src, lengths = src.cuda(), lengths.cuda()
        eager = greedy_decode(enc, dec, src, lengths, BOS, EOS)
        graphed = greedy_decode(enc, dec, src, lengths, BOS, EOS, cuda_graph=True)
        assert torch.equal(graphed.tokens, eager.tokens)
        assert torch.equal(graphed.lengths, eager.lengths)
        torch.testing.assert_close(graphed.scores, eager.scores)
        if eager.attention is not None:
            torch.testing.assert_close(graphed.attention, eager.attention)
    from fastrnn.nn import decoding
    assert len(decoding._GRAPHS[dec]) == 1


def test_decode_bench_smoke():
    """The benchmark's two models agree token for token (it raises otherwise) and its rows
    have the documented shape; sizes are tiny, nothing here is a timing assertion."""
    import argparse

    from fastrnn.bench import decode

    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cpu")
    decode.add_args(p)
    args = p.parse_args(["--batch", "1", "3", "--vocab", "50", "--hidden", "16", "--embed", "8",
                         "--src-len", "5", "--steps", "4", "--reps", "3"])
    rows = decode.run(args)
    assert len(rows) == 4
    assert {r["baseline"] for r in rows} == {"torch.nn", "torch.nn+pre"}
    for r in rows:
        assert r["bench"] == "decode" and r["impl"] == "fastrnn"
        assert {"cell", "B", "H", "attention", "V"} <= set(r["config"])
        assert r["median_ms"] > 0 and r["baseline_median_ms"] > 0 and r["ratio"] > 0


def test_bench_torch_baseline_matches_decoder():
    """The benchmark's torch.nn model is the same function as the AttentionDecoder it copies."""
    from fastrnn import EncoderOutput
    from fastrnn.bench.decode import TorchNNDecoder

    torch.manual_seed(0)
    dec = AttentionDecoder(V, 8, 10, 12, num_layers=2, attention="additive", attention_hidden=7)
    dec = dec.double().eval()
    base = TorchNNDecoder.like(dec).double().eval()
    keys = torch.randn(3, 5, 12, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 1, 0]], dtype=torch.bool)
    keys = keys * mask.unsqueeze(2)
    h0 = torch.randn(2, 3, 10, dtype=torch.float64)
    state = dec.init_state(EncoderOutput(keys, mask, h0))
    hs, feed = list(h0.unbind(0)), torch.zeros(3, 10, dtype=torch.float64)
    for tok in ([1, 4, 5], [6, 7, 8], [9, 3, 3]):
        tok = torch.tensor(tok)
        a, state, _ = dec.step(tok, state)
        b, hs, feed = base.step(tok, hs, feed, keys, mask)
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
