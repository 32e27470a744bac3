"""fastrnn.ops.gru on every backend against naive.py in fp64: outputs, final state and every
gradient, at awkward sizes, with/without bias, ragged lengths and reverse."""
import math

import importlib

import pytest
import torch

import fastrnn
from fastrnn import backends
gru_ops = importlib.import_module("fastrnn.ops.gru")  # the package (fastrnn.ops.gru is also the function)
from fastrnn.ops.gru import naive

KERNELS = [b for b in backends.available() if b != "reference"]
NAMES = ("x", "h0", "w_ih", "w_hh", "b_ih", "b_hh")


def make_inputs(T, B, I, H, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    k = 1 / math.sqrt(H)
    u = lambda *s: (torch.rand(*s, generator=g, dtype=torch.float64) * 2 - 1) * k  # noqa: E731
    return {"x": torch.randn(T, B, I, generator=g, dtype=torch.float64),
            "h0": torch.randn(B, H, generator=g, dtype=torch.float64) * 0.5,
            "w_ih": u(3 * H, I), "w_hh": u(3 * H, H),
            "b_ih": u(3 * H) if bias else None, "b_hh": u(3 * H) if bias else None}


def reverse_each(x, lengths):
    """Each sequence of x [T,B,...] reversed within its own length (independent of the library)."""
    if lengths is None:
        return x.flip(0)
    out = x.clone()
    for b, L in enumerate(lengths.tolist()):
        out[:L, b] = x[:L, b].flip(0)
    return out


def truth(t, lengths, reverse):
    x = reverse_each(t["x"], lengths) if reverse else t["x"]
    y, hT = naive.gru(x, t["h0"], t["w_ih"], t["w_hh"], t["b_ih"], t["b_hh"], lengths)
    if reverse:
        y = reverse_each(y, lengths)
    return y, hT


def kernel(t, lengths, reverse, backend):
    return fastrnn.ops.gru(t["x"], t["h0"], t["w_ih"], t["w_hh"], t["b_ih"], t["b_hh"], backend=backend,
                           lengths=lengths, reverse=reverse)


def outputs_and_grads(fn, t, dtype, seed=1):
    leaves = {k: (v.detach().to(dtype).requires_grad_() if v is not None else None) for k, v in t.items()}
    outs = fn(leaves)
    g = torch.Generator().manual_seed(seed)
    loss = sum((o * torch.randn(o.shape, generator=g, dtype=torch.float64).to(dtype)).sum() for o in outs)
    present = [k for k in NAMES if leaves[k] is not None]
    grads = torch.autograd.grad(loss, [leaves[k] for k in present])
    res = {"y": outs[0], "hT": outs[1]}
    res.update({"d" + k: gr for k, gr in zip(present, grads)})
    return res


# (T, B, I, H, bias, lengths, reverse); B <= 4 takes the kernels' fused small-batch path,
# larger B the GEMM path, so both appear with every feature.
CASES = [
    pytest.param(1, 1, 3, 5, True, None, False, id="T1-B1-I3-H5"),
    pytest.param(5, 3, 4, 63, True, None, False, id="T5-B3-I4-H63"),
    pytest.param(4, 6, 7, 9, True, None, False, id="T4-B6-I7-H9"),
    pytest.param(4, 2, 6, 8, False, None, False, id="T4-B2-H8-nobias"),
    pytest.param(3, 5, 6, 8, False, None, False, id="T3-B5-H8-nobias"),
    pytest.param(6, 3, 4, 10, True, [6, 2, 4], False, id="T6-B3-H10-ragged"),
    pytest.param(6, 6, 4, 10, True, [1, 6, 3, 5, 6, 2], False, id="T6-B6-H10-ragged"),
    pytest.param(5, 3, 4, 6, True, None, True, id="T5-B3-H6-reverse"),
    pytest.param(6, 3, 4, 10, True, [4, 6, 1], True, id="T6-B3-H10-ragged-reverse"),
    pytest.param(5, 6, 3, 8, False, [5, 2, 4, 1, 5, 3], True, id="T5-B6-H8-ragged-reverse-nobias"),
    # widths that are multiples of 32 take the fp32 AVX-512 GEMM (with leftover rows at B=5/6)
    pytest.param(3, 5, 32, 32, True, [3, 2, 3, 1, 3], False, id="T3-B5-I32-H32-ragged"),
    pytest.param(3, 6, 32, 32, False, None, True, id="T3-B6-I32-H32-nobias-reverse"),
]
CPU_ONLY = [
    pytest.param(3, 2, 7, 500, True, None, False, id="T3-B2-I7-H500"),
    pytest.param(3, 5, 7, 500, True, [3, 1, 2, 3, 3], False, id="T3-B5-I7-H500-ragged"),
]


def _skip_unless_takes(backend, dtype, T, B, I, H, lengths):
    reason = gru_ops.IMPLS[backend].check(dtype=dtype, T=T, B=B, I=I, H=H,
                                        has_lengths=lengths is not None and min(lengths) < T)
    if reason is not None:
        pytest.skip(reason)


def _compare(backend, T, B, I, H, bias, lengths, reverse, dtype):
    _skip_unless_takes(backend, dtype, T, B, I, H, lengths)
    t = make_inputs(T, B, I, H, bias)
    L = torch.tensor(lengths) if lengths is not None else None
    ref = outputs_and_grads(lambda v: truth(v, L, reverse), t, torch.float64)
    got = outputs_and_grads(lambda v: kernel(v, L, reverse, backend), t, dtype)
    assert set(got) == set(ref)
    if dtype == torch.float64:
        for k in ref:
            torch.testing.assert_close(got[k], ref[k], rtol=1e-9, atol=1e-11, msg=lambda m: f"{k}: {m}")
        return
    # fp32: at most twice PyTorch's own fp32 error (the same math in fp32) plus a small atol.
    torch_err = outputs_and_grads(lambda v: truth(v, L, reverse), t, dtype)
    for k in ref:
        err = (got[k].double() - ref[k]).abs().max().item()
        base = (torch_err[k].double() - ref[k]).abs().max().item()
        atol = 1e-6 * (1 + ref[k].abs().max().item())
        assert err <= 2 * base + atol, f"{k}: error {err:.3g} vs PyTorch fp32 error {base:.3g}"


@pytest.mark.parametrize("backend", KERNELS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("T,B,I,H,bias,lengths,reverse", CASES)
def test_matches_reference(backend, dtype, T, B, I, H, bias, lengths, reverse):
    _compare(backend, T, B, I, H, bias, lengths, reverse, dtype)


@pytest.mark.skipif("cpu" not in KERNELS, reason="fastrnn._C not built")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("T,B,I,H,bias,lengths,reverse", CPU_ONLY)
def test_matches_reference_large_hidden(dtype, T, B, I, H, bias, lengths, reverse):
    _compare("cpu", T, B, I, H, bias, lengths, reverse, dtype)


@pytest.mark.skipif("cpu" not in KERNELS, reason="fastrnn._C not built")
@pytest.mark.parametrize("B,bias,lengths", [pytest.param(2, True, None, id="B2"),
                                            pytest.param(5, True, [3, 1, 2, 3, 2], id="B5-ragged"),
                                            pytest.param(3, False, [1, 3, 2], id="B3-ragged-nobias")])
def test_gradcheck_cpu(B, bias, lengths):
    t = make_inputs(3, B, 3, 4, bias, seed=3)
    present = [k for k in NAMES if t[k] is not None]
    L = torch.tensor(lengths) if lengths is not None else None

    def f(*args):
        v = dict(zip(present, args))
        return fastrnn.ops.gru(v["x"], v["h0"], v["w_ih"], v["w_hh"], v.get("b_ih"), v.get("b_hh"),
                               backend="cpu", lengths=L)

    args = [t[k].clone().requires_grad_() for k in present]
    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("backend", KERNELS)
def test_padded_steps_are_zero_and_finite(backend):
    T, B, I, H = 6, 3, 4, 8
    lengths = [6, 2, 4]
    _skip_unless_takes(backend, torch.float32, T, B, I, H, lengths)
    t = make_inputs(T, B, I, H, True, seed=5)
    v = {k: (a.float().requires_grad_() if a is not None else None) for k, a in t.items()}
    y, hT = kernel(v, torch.tensor(lengths), False, backend)
    assert torch.isfinite(y).all() and torch.isfinite(hT).all()
    for b, L in enumerate(lengths):
        assert (y[L:, b] == 0).all(), f"padded steps of sequence {b} are not exactly 0"
        assert (y[:L, b] != 0).any()
    (y.sum() + hT.sum()).backward()
    for k in NAMES:
        assert torch.isfinite(v[k].grad).all(), k


@pytest.mark.skipif("cpu" not in KERNELS, reason="fastrnn._C not built")
def test_cpu_inference_without_grad_matches():
    t = make_inputs(5, 3, 4, 6, True, seed=2)
    with torch.no_grad():
        y, hT = kernel(t, None, False, "cpu")
    y2, hT2 = truth(t, None, False)
    torch.testing.assert_close(y, y2, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(hT, hT2, rtol=1e-10, atol=1e-12)


# --- bad arguments -------------------------------------------------------------------------

def _args(**over):
    t = {k: (v.float() if v is not None else None) for k, v in make_inputs(3, 2, 4, 5).items()}
    t.update(over)
    return t


def _call(t, **kw):
    return fastrnn.ops.gru(t["x"], t["h0"], t["w_ih"], t["w_hh"], t["b_ih"], t["b_hh"], **kw)


@pytest.mark.parametrize("over,exc,word", [
    pytest.param({"x": torch.randn(3, 4)}, ValueError, "x", id="x-2d"),
    pytest.param({"x": "abc"}, TypeError, "x", id="x-str"),
    pytest.param({"x": torch.zeros(3, 2, 4, dtype=torch.int32)}, TypeError, "x", id="x-int"),
    pytest.param({"h0": torch.randn(2, 6)}, ValueError, "h0", id="h0-hidden"),
    pytest.param({"w_ih": torch.randn(14, 4)}, ValueError, "w_ih", id="w_ih-not-3H"),
    pytest.param({"w_hh": torch.randn(15, 4)}, ValueError, "w_hh", id="w_hh-shape"),
    pytest.param({"b_ih": torch.randn(16)}, ValueError, "b_ih", id="b_ih-shape"),
    pytest.param({"b_hh": torch.randn(15, dtype=torch.float64)}, TypeError, "b_hh", id="b_hh-dtype"),
])
def test_bad_arguments(over, exc, word):
    with pytest.raises(exc, match=word):
        _call(_args(**over))


@pytest.mark.parametrize("lengths,exc", [
    pytest.param([3, 0], ValueError, id="zero"),
    pytest.param([4, 1], ValueError, id="longer-than-T"),
    pytest.param([[3, 1]], ValueError, id="wrong-shape"),
    pytest.param(torch.tensor([3.0, 1.0]), TypeError, id="float"),
])
def test_bad_lengths(lengths, exc):
    with pytest.raises(exc, match="lengths"):
        _call(_args(), lengths=lengths)


@pytest.mark.skipif("cpu" not in KERNELS, reason="fastrnn._C not built")
def test_cpu_refuses_bfloat16_explicitly():
    t = {k: (v.bfloat16() if v is not None else None) for k, v in _args().items()}
    with pytest.raises(RuntimeError, match="bfloat16"):
        _call(t, backend="cpu")


@pytest.mark.skipif("cpu" not in KERNELS, reason="fastrnn._C not built")
def test_extension_checks_name_the_argument():
    from fastrnn import _ext

    t = _args()
    with pytest.raises(ValueError, match="h0"):
        _ext._C.gru_fwd(t["x"], torch.randn(3, 5), t["w_ih"], t["w_hh"], None, None, None, False)
    with pytest.raises(TypeError, match="lengths"):
        _ext._C.gru_fwd(t["x"], t["h0"], t["w_ih"], t["w_hh"], None, None, torch.tensor([3.0, 2.0]), False)
