"""Encoder and AttentionDecoder: teacher forcing == step-wise decoding, padding invariance,
embeddings (loaded, frozen, tied), the bridge, and readable errors for bad input."""
import pytest
import torch

import fastrnn
from fastrnn import AttentionDecoder, Encoder, EncoderOutput

V, E = 23, 6
PAD = 0




def _models(cell="gru", attention="general", input_feeding=True, enc_layers=2, dec_layers=2,
            bidirectional=True, dec_hidden=None, tie=False, dtype=torch.float64, seed=0, **dec_kw):
    torch.manual_seed(seed)
    enc_h = 5
    M = enc_h * (2 if bidirectional else 1)
    H = dec_hidden or (M if attention == "dot" else 7)
    enc = Encoder(V, E, enc_h, num_layers=enc_layers, cell=cell, bidirectional=bidirectional,
                  dec_hidden_size=H, dec_num_layers=dec_layers)
    dec = AttentionDecoder(V, E, H, M, num_layers=dec_layers, cell=cell, attention=attention,
                           input_feeding=input_feeding, tie_embeddings=tie, **dec_kw)
    return enc.to(dtype).eval(), dec.to(dtype).eval()


def _batch(B=3, S=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, S + 1, (B,), generator=g)
    lengths[0] = S                                              # one full-length row
    src = torch.randint(1, V, (B, S), generator=g)
    src[torch.arange(S).unsqueeze(0) >= lengths.unsqueeze(1)] = PAD
    return src, lengths


def _stepwise(dec, tgt, enc_out):
    state = dec.init_state(enc_out)
    logits, attn = [], []
    for t in range(tgt.shape[1]):
        lg, state, w = dec.step(tgt[:, t], state)
        logits.append(lg)
        attn.append(w)
    return torch.stack(logits, 1), (torch.stack(attn, 1) if attn[0] is not None else None)


CASES = [pytest.param(c, a, f, id=f"{c}-{a}-{'feed' if f else 'nofeed'}-fp64")
         for c in ("gru", "lstm") for a in ("dot", "general", "low_rank", "additive", None)
         for f in (True, False)]


@pytest.mark.parametrize("cell,attention,feeding", CASES)
def test_teacher_forcing_equals_step(cell, attention, feeding):
    enc, dec = _models(cell, attention, feeding)
    src, lengths = _batch()
    tgt = torch.randint(1, V, (3, 5), generator=torch.Generator().manual_seed(2))
    out = enc(src, lengths)
    logits, attn = dec(tgt, out)
    assert logits.shape == (3, 5, V) and logits.dtype == torch.float64
    ref_logits, ref_attn = _stepwise(dec, tgt, out)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-12, atol=1e-12)
    if attention is None:
        assert attn is None and ref_attn is None
    else:
        assert attn.shape == (3, 5, 6)
        torch.testing.assert_close(attn, ref_attn, rtol=1e-12, atol=1e-12)
        # weights are a distribution over the real source tokens only
        torch.testing.assert_close(attn.sum(-1), torch.ones(3, 5, dtype=torch.float64))
        assert (attn.masked_select(~out.mask.unsqueeze(1).expand_as(attn)) == 0).all()


@pytest.mark.parametrize("kw", [pytest.param(dict(tie=True), id="tied"),
                                pytest.param(dict(dec_layers=1, enc_layers=3, dec_hidden=9), id="L3to1-H9"),
                                pytest.param(dict(bidirectional=False, attention="additive",
                                                  attention_hidden=4), id="unidir-additive-A4"),
                                pytest.param(dict(attention="low_rank", rank=2), id="low_rank-r2")])
def test_teacher_forcing_equals_step_variants(kw):
    enc, dec = _models(**kw)
    src, lengths = _batch(B=4, S=7, seed=3)
    tgt = torch.randint(1, V, (4, 6), generator=torch.Generator().manual_seed(4))
    out = enc(src, lengths)
    logits, attn = dec(tgt, out)
    ref_logits, ref_attn = _stepwise(dec, tgt, out)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(attn, ref_attn, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_padding_does_not_leak(cell):
    """Each sentence encodes and decodes the same alone as inside a padded batch."""
    enc, dec = _models(cell, "additive")
    src, lengths = _batch(B=4, S=7, seed=5)
    tgt = torch.randint(1, V, (4, 3), generator=torch.Generator().manual_seed(6))
    out = enc(src, lengths)
    logits, attn = dec(tgt, out)
    assert out.states.shape == (4, 7, enc.output_size)
    assert (out.states[~out.mask] == 0).all()
    assert out.mask.sum(1).tolist() == lengths.tolist()
    for b in range(4):
        n = int(lengths[b])
        one = enc(src[b:b + 1, :n], lengths[b:b + 1])
        torch.testing.assert_close(out.states[b, :n], one.states[0], rtol=1e-10, atol=1e-12)
        h_batch = out.hidden if cell == "gru" else out.hidden[0]
        h_one = one.hidden if cell == "gru" else one.hidden[0]
        torch.testing.assert_close(h_batch[:, b], h_one[:, 0], rtol=1e-10, atol=1e-12)
        lg, w = dec(tgt[b:b + 1], one)
        torch.testing.assert_close(logits[b], lg[0], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(attn[b, :, :n], w[0], rtol=1e-10, atol=1e-12)


def test_bridge_is_linear_tanh_of_all_final_states():
    torch.manual_seed(0)
    enc = Encoder(V, E, 4, num_layers=2, cell="gru", bidirectional=True, dec_hidden_size=5,
                  dec_num_layers=3).double()
    src, lengths = _batch(B=2, S=4)
    out = enc(src, lengths)
    assert out.hidden.shape == (3, 2, 5)
    # final states straight from the (torch.nn-compatible) GRU on the packed batch
    x = enc.embed(src)
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    _, hn = enc.rnn(packed)                                      # [L*D,B,H]
    flat = hn.transpose(0, 1).reshape(2, -1)
    want = torch.tanh(flat @ enc.bridge.weight.t() + enc.bridge.bias).view(2, 3, 5).transpose(0, 1)
    torch.testing.assert_close(out.hidden, want)


def test_encoder_lstm_hidden_is_pair():
    enc, dec = _models("lstm", "dot", dec_layers=3)
    out = enc(*_batch())
    h, c = out.hidden
    assert h.shape == c.shape == (3, 3, dec.hidden_size)
    assert enc.output_size == 10


def test_frozen_embeddings_keep_all_but_special_rows():
    torch.manual_seed(0)
    table = torch.randn(V, E)
    enc = Encoder(V, E, 4, embeddings=table, freeze_embeddings=True, num_special=4)
    dec = AttentionDecoder(V, E, 8, 8, embeddings=table, freeze_embeddings=True, num_special=4,
                           tie_embeddings=True)
    torch.testing.assert_close(enc.embed.full_weight(), table)
    ids = torch.arange(V).unsqueeze(0)
    torch.testing.assert_close(enc.embed(ids)[0], table)
    params = list(enc.parameters()) + list(dec.parameters())
    opt = torch.optim.AdamW(params, lr=0.1, weight_decay=0.5)
    src = torch.randint(0, V, (5, 6))
    lengths = torch.full((5,), 6)
    for _ in range(3):
        logits, _ = dec(torch.randint(0, V, (5, 4)), enc(src, lengths))
        opt.zero_grad()
        logits.logsumexp(-1).sum().backward()
        opt.step()
    for emb in (enc.embed, dec.embed):
        w = emb.full_weight().detach()
        torch.testing.assert_close(w[4:], table[4:], rtol=0, atol=0)
        assert not torch.allclose(w[:4], table[:4])
        assert not any(p is emb.fixed for p in params)


def test_tied_projection_uses_embedding_table():
    enc, dec = _models(tie=True, dtype=torch.float64)
    out = enc(*_batch())
    tgt = torch.randint(1, V, (3, 2))
    logits, _ = dec(tgt, out)
    assert dec.out is None and dec.output_size == E
    with torch.no_grad():
        dec.embed.weight[5] += 1.0
    logits2, _ = dec(tgt, out)
    # row 5's logit (and the inputs using token 5) change, the table is the projection
    assert not torch.allclose(logits[..., 5], logits2[..., 5])


@pytest.mark.parametrize("tie", [False, True], ids=["free", "tied"])
def test_features_only_and_output_layer_give_the_logits(tie):
    """forward(features_only=True) returns the output layer's inputs; output_layer of any
    selection of them (the non-padding rows of a loss) gives those rows' logits and gradients."""
    enc, dec = _models("gru", "general", tie=tie)
    src, lengths = _batch()
    tgt = torch.randint(1, V, (3, 5))
    logits, attn = dec(tgt, enc(src, lengths))
    feats, attn2 = dec(tgt, enc(src, lengths), features_only=True)
    assert feats.shape == (3, 5, dec.output_size)
    torch.testing.assert_close(attn2, attn)
    torch.testing.assert_close(dec.output_layer(feats), logits)
    keep = torch.rand(3, 5, generator=torch.Generator().manual_seed(2)) < 0.6
    torch.testing.assert_close(dec.output_layer(feats[keep]), logits[keep])
    weight = torch.randn(int(keep.sum()), V, dtype=feats.dtype)
    params = [p for p in dec.parameters() if p.requires_grad]
    got = torch.autograd.grad((dec.output_layer(feats[keep]) * weight).sum(), params, allow_unused=True)
    want = torch.autograd.grad((logits[keep] * weight).sum(), params, allow_unused=True)
    for g, w in zip(got, want):
        assert (g is None) == (w is None)
        if g is not None:
            torch.testing.assert_close(g, w)
    with pytest.raises(TypeError, match="features_only must be a bool"):
        dec(tgt, enc(src, lengths), features_only=1)
    with pytest.raises(ValueError, match=rf"features must be a tensor of shape \[\.\.\., {dec.output_size}\]"):
        dec.output_layer(feats[..., :-1])


def test_gradients_reach_every_parameter():
    enc, dec = _models("lstm", "additive", dtype=torch.float32)
    enc.train(), dec.train()
    src, lengths = _batch()
    logits, _ = dec(torch.randint(1, V, (3, 4)), enc(src, lengths))
    logits.sum().backward()
    for name, p in list(enc.named_parameters()) + list(dec.named_parameters()):
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_dropout_changes_training_outputs_only():
    torch.manual_seed(0)
    enc = Encoder(V, E, 5, num_layers=2, dropout=0.5, dec_hidden_size=7, dec_num_layers=2).double()
    dec = AttentionDecoder(V, E, 7, 10, num_layers=2, dropout=0.5).double()
    src, lengths = _batch()
    tgt = torch.randint(1, V, (3, 4))
    enc.eval(), dec.eval()
    a, _ = dec(tgt, enc(src, lengths))
    b, _ = dec(tgt, enc(src, lengths))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    enc.train(), dec.train()
    c, _ = dec(tgt, enc(src, lengths))
    assert not torch.allclose(a, c)


# -- bad input -----------------------------------------------------------------------------------

def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="cell"):
        Encoder(V, E, 4, cell="rnn")
    with pytest.raises(ValueError, match="attention"):
        AttentionDecoder(V, E, 4, 4, attention="cosine")
    with pytest.raises(ValueError, match="embeddings must have shape"):
        Encoder(V, E, 4, embeddings=torch.randn(V, E + 1))
    with pytest.raises(TypeError, match="embeddings"):
        Encoder(V, E, 4, embeddings=torch.zeros(V, E, dtype=torch.long))
    with pytest.raises(ValueError, match="num_special"):
        Encoder(V, E, 4, num_special=V + 1)
    with pytest.raises(ValueError, match="hidden_size"):
        Encoder(V, E, 0)
    with pytest.raises(ValueError, match="dot"):
        AttentionDecoder(V, E, 4, 6, attention="dot")


def test_bad_encoder_input():
    enc, dec = _models()
    src, lengths = _batch()
    with pytest.raises(TypeError, match="src"):
        enc(src.float(), lengths)
    with pytest.raises(ValueError, match=r"src must have shape \[B, S\]"):
        enc(src[0], lengths)
    with pytest.raises(ValueError, match="lengths must have shape"):
        enc(src, lengths[:2])
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, 6\]"):
        enc(src, lengths + 10)
    with pytest.raises(TypeError, match="lengths"):
        enc(src, lengths.float())
    with pytest.raises(ValueError, match="outside the vocabulary"):
        enc(src + V, lengths)


def test_bad_decoder_input():
    enc, dec = _models()
    out = enc(*_batch())
    with pytest.raises(ValueError, match="memory_size"):
        dec.init_state(EncoderOutput(out.states[..., :4], out.mask, out.hidden))
    with pytest.raises(ValueError, match="dec_num_layers"):
        dec.init_state(out._replace(hidden=out.hidden[:1]))
    with pytest.raises(TypeError, match="GRU decoder"):
        dec.init_state(out._replace(hidden=(out.hidden, out.hidden)))
    with pytest.raises(ValueError, match="mask"):
        dec.init_state(out._replace(mask=out.mask.long()))
    with pytest.raises(TypeError, match="tgt_in"):
        dec(torch.ones(3, 2), out)
    with pytest.raises(ValueError, match="batch size"):
        dec(torch.ones(2, 2, dtype=torch.long), out)
    with pytest.raises(ValueError, match="tokens"):
        dec.step(torch.ones(3, 1, dtype=torch.long), dec.init_state(out))
    _, lstm_dec = _models("lstm")
    with pytest.raises(TypeError, match="LSTM decoder"):
        lstm_dec.init_state(out)


def test_zero_hidden_when_encoder_gives_none():
    enc, dec = _models()
    out = enc(*_batch())
    state = dec.init_state(out._replace(hidden=None))
    assert all((h == 0).all() for h in state.hidden)
    logits, _ = dec(torch.ones(3, 2, dtype=torch.long), out._replace(hidden=None))
    assert torch.isfinite(logits).all()


def test_public_names():
    for name in ("Encoder", "EncoderOutput", "AttentionDecoder", "DecoderState", "greedy_decode",
                 "beam_search", "DecodeResult", "plot_attention"):
        assert hasattr(fastrnn, name) and hasattr(fastrnn.nn, name), name
