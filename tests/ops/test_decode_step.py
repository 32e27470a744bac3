"""fastrnn.ops.greedy_update (csrc/decode): the fused bookkeeping of a greedy step against its
ATen reference, on the CPU kernel and (gpu) the CUDA kernel, at awkward cases: ties, the
largest logit on pad, NaN and -inf logits, finished rows, the last column, maximum lengths."""
import pytest
import torch

from fastrnn import _ext
from fastrnn.ops.decode import greedy_update, reference

needs_ext = pytest.mark.skipif(_ext._C is None or not hasattr(_ext._C, "greedy_update"),
                               reason="fastrnn._C not built")
DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=pytest.mark.gpu)]


def _case(dev, dtype, B=6, V=37, L=5, S=7, t=2, pad=3, seed=0, attn=True):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, V, generator=g, dtype=torch.float64)
    logits[0, pad] = 50.0                        # the largest logit is pad's: never chosen
    logits[1, 5] = logits[1, 9] = 40.0           # a tie: the first index wins
    logits[2, :] = float("-inf")
    logits[2, 11] = 0.5                          # one finite logit
    logits[3, 7] = float("nan")                  # NaN: log_softmax is NaN everywhere
    logits[4, 2] = 45.0                          # row 4 picks eos (2)
    st = dict(
        t=torch.tensor([t]),
        maxlen=torch.tensor([9, 9, 3, 9, 9, 9])[:B],          # row 2 ends at this step (t + 1 == 3)
        alive=torch.tensor([True, True, True, True, True, False])[:B],
        tokens=torch.randint(0, V, (B, L), generator=g),
        scores=torch.randn(B, generator=g).float(),
        out_len=torch.randint(0, 4, (B,), generator=g),
        prev=torch.randint(0, V, (B,), generator=g),
        attn=torch.randn(B, L, S, generator=g).to(dtype) if attn else None)
    weights = torch.softmax(torch.randn(B, S, generator=g), -1).to(dtype) if attn else None
    st = {k: (v.to(dev) if v is not None else None) for k, v in st.items()}
    return logits.to(dtype).to(dev), None if weights is None else weights.to(dev), st


def _run(fn, logits, weights, st, pad=3, eos=2, **kw):
    st = {k: (v.clone() if v is not None else None) for k, v in st.items()}
    st["t_next"] = torch.full_like(st["t"], -7)
    fn(logits, weights, st["t"], pad, eos, st["maxlen"], st["alive"], st["tokens"], st["scores"],
       st["out_len"], st["prev"], st["attn"], t_next=st["t_next"], **kw)
    return st


@needs_ext
@pytest.mark.parametrize("dev", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("t", [0, 2, 4])
@pytest.mark.parametrize("attn", [True, False])
def test_kernel_matches_the_reference(dev, dtype, t, attn):
    logits, weights, st = _case(dev, dtype, t=t, attn=attn)
    ref = _run(reference, logits, weights, st)
    ours = _run(greedy_update, logits, weights, st, backend="kernel")
    for k in ("tokens", "out_len", "alive", "prev", "attn", "t", "t_next"):
        if ref[k] is not None:
            assert torch.equal(ours[k], ref[k]), k
    torch.testing.assert_close(ours["scores"], ref["scores"], rtol=1e-5, atol=1e-5, equal_nan=True)
    assert ours["t"].item() == t and ours["t_next"].item() == t + 1
    # the cases do what they are there for
    assert ours["prev"][0].item() != 3 and ours["prev"][1].item() == 5 and ours["prev"][2].item() == 11
    assert ours["prev"][3].item() == 0 and torch.isnan(ours["scores"][3])
    assert bool(ours["alive"][2]) == (t + 1 < 3) and not ours["alive"][4] and not ours["alive"][5]
    assert ours["tokens"][4, t].item() == 3 and ours["tokens"][5, t].item() == 3  # eos, dead: pad
    assert ours["out_len"][5].item() == st["out_len"][5].item()
    if attn:
        assert torch.equal(ours["attn"][4, t], torch.zeros_like(ours["attn"][4, t]))
        assert torch.equal(ours["attn"][0, t], weights[0])


@needs_ext
@pytest.mark.parametrize("dev", DEVICES)
def test_large_vocabulary_and_many_rows(dev):
    """V and B beyond one block's threads (the CUDA kernel's strided loop and block merge)."""
    g = torch.Generator().manual_seed(1)
    B, V, L = 33, 20011, 4
    logits = (torch.randn(B, V, generator=g) * 3).to(dev)
    st = dict(t=torch.tensor([1]), maxlen=torch.full((B,), 4), alive=torch.ones(B, dtype=torch.bool),
              tokens=torch.zeros(B, L, dtype=torch.long), scores=torch.zeros(B), out_len=torch.zeros(B, dtype=torch.long),
              prev=torch.zeros(B, dtype=torch.long), attn=None)
    st = {k: (v.to(dev) if v is not None else None) for k, v in st.items()}
    ref = _run(reference, logits, None, st, pad=0, eos=1)
    ours = _run(greedy_update, logits, None, st, pad=0, eos=1, backend="kernel")
    assert torch.equal(ours["prev"], ref["prev"])
    assert torch.equal(ours["tokens"], ref["tokens"])
    torch.testing.assert_close(ours["scores"], ref["scores"], rtol=1e-4, atol=1e-4)  # sums of 20011 exps


@pytest.mark.gpu
@needs_ext
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_half_logits(dtype):
    logits, weights, st = _case("cuda", dtype)
    logits[3, 7] = 0.0  # no NaN row here: half's log_softmax differs in rounding only
    ref = _run(reference, logits, weights, st)
    ours = _run(greedy_update, logits, weights, st, backend="kernel")
    for k in ("tokens", "out_len", "alive", "prev", "attn"):
        assert torch.equal(ours[k], ref[k]), k
    torch.testing.assert_close(ours["scores"], ref["scores"], rtol=1e-3, atol=1e-3)


@needs_ext
def test_bad_arguments_raise_clear_errors():
    logits, weights, st = _case("cpu", torch.float32)
    with pytest.raises(TypeError, match="scores must be Float"):
        st2 = dict(st, scores=st["scores"].double())
        _run(greedy_update, logits, weights, st2, backend="kernel")
    with pytest.raises(ValueError, match=r"maxlen must have shape \[6\]"):
        _run(greedy_update, logits, weights, dict(st, maxlen=st["maxlen"][:3]), backend="kernel")
    with pytest.raises(ValueError, match=r"pad must be in \[0, 37\)"):
        _run(greedy_update, logits, weights, st, pad=37, backend="kernel")
    with pytest.raises(ValueError, match="backend must be"):
        _run(greedy_update, logits, weights, st, backend="nope")
    with pytest.raises(ValueError, match="t_next must be another buffer"):
        greedy_update(logits, weights, st["t"], 3, 2, st["maxlen"], st["alive"], st["tokens"], st["scores"],
                      st["out_len"], st["prev"], st["attn"], t_next=st["t"], backend="kernel")
