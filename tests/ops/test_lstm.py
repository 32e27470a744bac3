"""fastrnn.ops.lstm on every backend against naive.py in fp64: outputs, final states and every
gradient, at awkward sizes, with/without bias, projection, ragged lengths and reverse."""
import math

import importlib

import pytest
import torch

import fastrnn
from fastrnn import backends
lstm_ops = importlib.import_module("fastrnn.ops.lstm")  # the package (fastrnn.ops.lstm is also the function)
from fastrnn.ops.lstm import naive

KERNELS = [b for b in backends.available() if b != "reference"]
NAMES = ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh", "w_hr")


def make_inputs(T, B, I, H, P=0, bias=True, seed=0):
    """fp64 leaf tensors; P=0 means no projection."""
    g = torch.Generator().manual_seed(seed)
    Pd = P or H
    k = 1 / math.sqrt(H)
    u = lambda *s: (torch.rand(*s, generator=g, dtype=torch.float64) * 2 - 1) * k  # noqa: E731
    t = {"x": torch.randn(T, B, I, generator=g, dtype=torch.float64),
         "h0": torch.randn(B, Pd, generator=g, dtype=torch.float64) * 0.5,
         "c0": torch.randn(B, H, generator=g, dtype=torch.float64) * 0.5,
         "w_ih": u(4 * H, I), "w_hh": u(4 * H, Pd),
         "b_ih": u(4 * H) if bias else None, "b_hh": u(4 * H) if bias else None,
         "w_hr": u(Pd, H) if P else None}
    return t


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
    y, (hT, cT) = naive.lstm(x, t["h0"], t["c0"], t["w_ih"], t["w_hh"], t["b_ih"], t["b_hh"], t["w_hr"], lengths)
    if reverse:
        y = reverse_each(y, lengths)
    return y, hT, cT


def kernel(t, lengths, reverse, backend):
    y, (hT, cT) = fastrnn.ops.lstm(t["x"], t["h0"], t["c0"], t["w_ih"], t["w_hh"], t["b_ih"], t["b_hh"],
                                   backend=backend, w_hr=t["w_hr"], lengths=lengths, reverse=reverse)
    return y, hT, cT


def outputs_and_grads(fn, t, dtype, seed=1):
    """(y, hT, cT) and the gradient of a random linear loss w.r.t. every present input."""
    leaves = {k: (v.detach().to(dtype).requires_grad_() if v is not None else None) for k, v in t.items()}
    outs = fn(leaves)
    g = torch.Generator().manual_seed(seed)
    loss = sum((o * torch.randn(o.shape, generator=g, dtype=torch.float64).to(dtype)).sum() for o in outs)
    present = [k for k in NAMES if leaves[k] is not None]
    grads = torch.autograd.grad(loss, [leaves[k] for k in present])
    res = {"y": outs[0], "hT": outs[1], "cT": outs[2]}
    res.update({"d" + k: gr for k, gr in zip(present, grads)})
    return res


# (T, B, I, H, P, bias, lengths, reverse); B <= 4 takes the kernels' fused small-batch path,
# larger B the GEMM path, so both appear with every feature.
CASES = [
    pytest.param(1, 1, 3, 5, 0, True, None, False, id="T1-B1-I3-H5"),
    pytest.param(5, 3, 4, 63, 0, True, None, False, id="T5-B3-I4-H63"),
    pytest.param(4, 6, 7, 9, 0, True, None, False, id="T4-B6-I7-H9"),
    pytest.param(4, 2, 6, 8, 0, False, None, False, id="T4-B2-H8-nobias"),
    pytest.param(3, 5, 6, 8, 0, False, None, False, id="T3-B5-H8-nobias"),
    pytest.param(4, 3, 5, 12, 4, True, None, False, id="T4-B3-H12-proj4"),
    pytest.param(3, 6, 5, 7, 3, True, None, False, id="T3-B6-H7-proj3"),
    pytest.param(6, 3, 4, 10, 0, True, [6, 2, 4], False, id="T6-B3-H10-ragged"),
    pytest.param(6, 6, 4, 10, 0, True, [1, 6, 3, 5, 6, 2], False, id="T6-B6-H10-ragged"),
    pytest.param(5, 3, 4, 6, 0, True, None, True, id="T5-B3-H6-reverse"),
    pytest.param(6, 3, 4, 10, 0, True, [4, 6, 1], True, id="T6-B3-H10-ragged-reverse"),
    pytest.param(5, 6, 3, 8, 5, True, [5, 2, 4, 1, 5, 3], True, id="T5-B6-H8-proj5-ragged-reverse"),
    pytest.param(5, 2, 3, 8, 3, False, [2, 5], False, id="T5-B2-H8-proj3-ragged-nobias"),
    # widths that are multiples of 32 take the fp32 AVX-512 GEMM (with leftover rows at B=5/6)
    pytest.param(3, 5, 32, 32, 0, True, [3, 2, 3, 1, 3], False, id="T3-B5-I32-H32-ragged"),
    pytest.param(3, 6, 32, 16, 0, False, None, True, id="T3-B6-I32-H16-nobias-reverse"),
]
# Only for the cpu backend: the Triton interpreter is too slow at this size.
CPU_ONLY = [
    pytest.param(3, 2, 7, 500, 0, True, None, False, id="T3-B2-I7-H500"),
    pytest.param(3, 5, 7, 500, 0, True, [3, 1, 2, 3, 3], False, id="T3-B5-I7-H500-ragged"),
]


def _skip_unless_takes(backend, dtype, T, B, I, H, P, lengths):
    reason = lstm_ops.IMPLS[backend].check(dtype=dtype, T=T, B=B, I=I, H=H, P=P or H, has_proj=bool(P),
                                         has_lengths=lengths is not None and min(lengths) < T)
    if reason is not None:
        pytest.skip(reason)


def _compare(backend, T, B, I, H, P, bias, lengths, reverse, dtype):
    _skip_unless_takes(backend, dtype, T, B, I, H, P, lengths)
    t = make_inputs(T, B, I, H, P, bias)
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
@pytest.mark.parametrize("T,B,I,H,P,bias,lengths,reverse", CASES)
def test_matches_reference(backend, dtype, T, B, I, H, P, bias, lengths, reverse):
    _compare(backend, T, B, I, H, P, bias, lengths, reverse, dtype)


@pytest.mark.skipif("cpu" not in KERNELS, reason="fastrnn._C not built")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("T,B,I,H,P,bias,lengths,reverse", CPU_ONLY)
def test_matches_reference_large_hidden(dtype, T, B, I, H, P, bias, lengths, reverse):
    _compare("cpu", T, B, I, H, P, bias, lengths, reverse, dtype)


@pytest.mark.skipif("cpu" not in KERNELS, reason="fastrnn._C not built")
@pytest.mark.parametrize("B,P,lengths", [pytest.param(2, 0, None, id="B2"),
                                         pytest.param(5, 0, [3, 1, 2, 3, 2], id="B5-ragged"),
                                         pytest.param(2, 2, [1, 3], id="B2-proj2-ragged")])
def test_gradcheck_cpu(B, P, lengths):
    t = make_inputs(3, B, 3, 4, P, True, seed=3)
    present = [k for k in NAMES if t[k] is not None]
    L = torch.tensor(lengths) if lengths is not None else None

    def f(*args):
        v = dict(zip(present, args))
        v.setdefault("w_hr", None)
        y, (hT, cT) = fastrnn.ops.lstm(v["x"], v["h0"], v["c0"], v["w_ih"], v["w_hh"], v["b_ih"], v["b_hh"],
                                       backend="cpu", w_hr=v["w_hr"], lengths=L)
        return y, hT, cT

    args = [t[k].clone().requires_grad_() for k in present]
    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("backend", KERNELS)
def test_padded_steps_are_zero_and_finite(backend):
    T, B, I, H = 6, 3, 4, 8
    lengths = [6, 2, 4]
    _skip_unless_takes(backend, torch.float32, T, B, I, H, 0, lengths)
    t = make_inputs(T, B, I, H, 0, True, seed=5)
    v = {k: (a.float().requires_grad_() if a is not None else None) for k, a in t.items()}
    y, hT, cT = kernel(v, torch.tensor(lengths), False, backend)
    assert torch.isfinite(y).all() and torch.isfinite(hT).all() and torch.isfinite(cT).all()
    for b, L in enumerate(lengths):
        assert (y[L:, b] == 0).all(), f"padded steps of sequence {b} are not exactly 0"
        assert (y[:L, b] != 0).any()
    (y.sum() + hT.sum() + cT.sum()).backward()
    for k in NAMES:
        if v[k] is not None:
            assert torch.isfinite(v[k].grad).all(), k


@pytest.mark.skipif("cpu" not in KERNELS, reason="fastrnn._C not built")
def test_cpu_inference_without_grad_matches():
    """needs_grad=False takes buffers that keep only two steps: same results."""
    t = make_inputs(5, 3, 4, 6, 0, True, seed=2)
    with torch.no_grad():
        y, hT, cT = kernel(t, None, False, "cpu")
    y2, hT2, cT2 = truth(t, None, False)
    torch.testing.assert_close(y, y2, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(hT, hT2, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(cT, cT2, rtol=1e-10, atol=1e-12)


# --- bad arguments -------------------------------------------------------------------------

def _args(**over):
    t = {k: (v.float() if v is not None else None) for k, v in make_inputs(3, 2, 4, 5).items()}
    t.update(over)
    return t


def _call(t, **kw):
    return fastrnn.ops.lstm(t["x"], t["h0"], t["c0"], t["w_ih"], t["w_hh"], t["b_ih"], t["b_hh"],
                            w_hr=t.get("w_hr"), **kw)


@pytest.mark.parametrize("over,exc,word", [
    pytest.param({"x": torch.randn(3, 4)}, ValueError, "x", id="x-2d"),
    pytest.param({"x": [[1.0]]}, TypeError, "x", id="x-list"),
    pytest.param({"x": torch.zeros(3, 2, 4, dtype=torch.int64)}, TypeError, "x", id="x-int"),
    pytest.param({"h0": torch.randn(3, 5)}, ValueError, "h0", id="h0-batch"),
    pytest.param({"c0": torch.randn(2, 6)}, ValueError, "c0", id="c0-hidden"),
    pytest.param({"w_ih": torch.randn(19, 4)}, ValueError, "w_ih", id="w_ih-not-4H"),
    pytest.param({"w_hh": torch.randn(20, 4)}, ValueError, "w_hh", id="w_hh-shape"),
    pytest.param({"b_ih": torch.randn(21)}, ValueError, "b_ih", id="b_ih-shape"),
    pytest.param({"b_hh": torch.randn(20, dtype=torch.float64)}, TypeError, "b_hh", id="b_hh-dtype"),
    pytest.param({"w_hr": torch.randn(3, 4)}, ValueError, "w_hr", id="w_hr-shape"),
])
def test_bad_arguments(over, exc, word):
    with pytest.raises(exc, match=word):
        _call(_args(**over))


@pytest.mark.parametrize("lengths,exc", [
    pytest.param([3, 0], ValueError, id="zero"),
    pytest.param([4, 1], ValueError, id="longer-than-T"),
    pytest.param([3], ValueError, id="wrong-count"),
    pytest.param(torch.tensor([3.0, 1.0]), TypeError, id="float"),
])
def test_bad_lengths(lengths, exc):
    with pytest.raises(exc, match="lengths"):
        _call(_args(), lengths=lengths)


def test_bad_backend_name():
    with pytest.raises(ValueError, match="backend"):
        _call(_args(), backend="fortran")


@pytest.mark.skipif("cpu" not in KERNELS, reason="fastrnn._C not built")
def test_cpu_refuses_half_explicitly():
    t = {k: (v.half() if v is not None else None) for k, v in _args().items()}
    with pytest.raises(RuntimeError, match="float16"):
        _call(t, backend="cpu")


@pytest.mark.skipif("cpu" not in KERNELS, reason="fastrnn._C not built")
def test_extension_checks_name_the_argument():
    """The C++ binding checks too (callers may bypass the Python wrapper)."""
    from fastrnn import _ext

    t = _args()
    with pytest.raises(ValueError, match="c0"):
        _ext._C.lstm_fwd(t["x"], t["h0"], torch.randn(2, 7), t["w_ih"], t["w_hh"], None, None, None, None, False)
    with pytest.raises(TypeError, match="w_hh"):
        _ext._C.lstm_fwd(t["x"], t["h0"], t["c0"], t["w_ih"], t["w_hh"].double(), None, None, None, None, False)
