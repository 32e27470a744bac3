"""The CUDA kernels for a decoding step's few rows (csrc/common/small_rows_cuda.cu): the linear
layer (fastrnn.ops.linear on CUDA, up to 8 rows) and the one-kernel LSTM/GRU step (T=1, no
gradients), against fp64 references, at aligned and unaligned sizes, with outputs NaN-poisoned
(conftest). The routing itself is checked on the CPU too."""
import pytest
import torch
import torch.nn.functional as F

from fastrnn import _ext
from fastrnn.ops import gru, linear, lstm
from fastrnn.ops.gru import naive as gru_naive
from fastrnn.ops.lstm import naive as lstm_naive
from fastrnn.ops.linear import _refusal, linear_cat

TOL = {torch.float32: 2e-5, torch.float64: 1e-12, torch.float16: 3e-3, torch.bfloat16: 2e-2}
gpu = pytest.mark.gpu


def _rand(*shape, gen, dtype=torch.float64, scale=1.0):
    return ((torch.rand(*shape, generator=gen, dtype=torch.float64) * 2 - 1) * scale).to(dtype)


@gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16],
                         ids=["fp32", "fp64", "fp16", "bf16"])
@pytest.mark.parametrize("M,K,N", [(1, 600, 2000), (3, 601, 37), (8, 1200, 600), (5, 8, 1), (2, 1500, 20011)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_small_rows_matches_fp64(dtype, M, K, N, bias):
    g = torch.Generator().manual_seed(M * 1000 + K + N)
    x, w = _rand(M, K, gen=g), _rand(N, K, gen=g, scale=K ** -0.5)
    b = _rand(N, gen=g) if bias else None
    ref = F.linear(x, w, b)
    dev = [t.to(dtype).cuda() if t is not None else None for t in (x, w, b)]
    assert _refusal(*dev) is None
    with torch.no_grad():
        y = linear(*dev, backend="kernel")
    assert y.dtype == dtype and y.shape == (M, N)
    torch.testing.assert_close(y.double().cpu(), ref, rtol=TOL[dtype], atol=TOL[dtype])


@gpu
def test_linear_small_rows_unaligned_weight_and_leading_dims():
    g = torch.Generator().manual_seed(3)
    store = _rand(1 + 40 * 64, gen=g, dtype=torch.float32).cuda()
    w = store[1:].view(40, 64)              # 4 bytes past a 16-byte boundary: the scalar loop
    x = _rand(2, 3, 64, gen=g, dtype=torch.float32).cuda()
    with torch.no_grad():
        y = linear(x, w, backend="kernel")
    torch.testing.assert_close(y, F.linear(x, w), rtol=2e-5, atol=2e-5)
    assert y.shape == (2, 3, 40)


@gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("M,K1,K2,N", [(1, 600, 600, 600), (3, 7, 5, 33), (8, 64, 3, 100)])
@pytest.mark.parametrize("tanh", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_cat_matches_fp64(dtype, M, K1, K2, N, tanh, bias):
    """The decoder's attentional layer tanh(W [ctx; h]) in one kernel (two input parts, tanh)."""
    g = torch.Generator().manual_seed(M + K1 + K2 + N)
    x1, x2, w = _rand(M, K1, gen=g), _rand(M, K2, gen=g), _rand(N, K1 + K2, gen=g, scale=(K1 + K2) ** -0.5)
    b = _rand(N, gen=g) if bias else None
    ref = F.linear(torch.cat([x1, x2], 1), w, b)
    ref = torch.tanh(ref) if tanh else ref
    dev = [t.to(dtype).cuda() if t is not None else None for t in (x1, x2, w, b)]
    with torch.no_grad():
        y = linear_cat(*dev, tanh=tanh)
    torch.testing.assert_close(y.double().cpu(), ref, rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("tanh", [True, False])
def test_linear_cat_elsewhere_is_cat_linear_tanh(tanh):
    g = torch.Generator().manual_seed(0)
    x1, x2, w, b = (_rand(*s, gen=g, dtype=torch.float32) for s in ((2, 5), (2, 3), (4, 8), (4,)))
    ref = F.linear(torch.cat([x1, x2], 1), w, b)
    torch.testing.assert_close(linear_cat(x1, x2, w, b, tanh=tanh), torch.tanh(ref) if tanh else ref)


def test_linear_routing():
    """CUDA tensors with too many rows, or needing gradients, go to F.linear (CPU-checkable)."""
    x = torch.zeros(9, 4)
    w = torch.zeros(5, 4, requires_grad=True)
    assert "gradients" in _refusal(x, w, None)
    if _ext._C is not None and hasattr(_ext._C, "linear_small_cuda_fits"):
        assert _ext._C.linear_small_cuda_fits(8, 4096, True)
        assert not _ext._C.linear_small_cuda_fits(9, 16, False)
        assert not _ext._C.linear_small_cuda_fits(0, 16, False)
    with pytest.raises(ValueError, match="backend must be"):
        linear(x, w.detach(), backend="gpu")


@gpu
@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16], ids=["fp32", "fp64", "fp16"])
@pytest.mark.parametrize("B,I,H", [(1, 900, 600), (3, 7, 33), (8, 300, 256), (5, 64, 1000)])
@pytest.mark.parametrize("bias", [True, False])
def test_one_step_kernel_matches_fp64(cell, dtype, B, I, H, bias):
    G = 4 if cell == "lstm" else 3
    g = torch.Generator().manual_seed(B * 7 + I + H)
    t = dict(x=_rand(1, B, I, gen=g), h0=_rand(B, H, gen=g), w_ih=_rand(G * H, I, gen=g, scale=I ** -0.5),
             w_hh=_rand(G * H, H, gen=g, scale=H ** -0.5), b_ih=_rand(G * H, gen=g) if bias else None,
             b_hh=_rand(G * H, gen=g) if bias else None)
    if cell == "lstm":
        t["c0"] = _rand(B, H, gen=g)
    dev = {k: (v.to(dtype).cuda() if v is not None else None) for k, v in t.items()}
    with torch.no_grad():
        if cell == "gru":
            y, hT = gru(dev["x"], dev["h0"], dev["w_ih"], dev["w_hh"], dev["b_ih"], dev["b_hh"], backend="cuda")
            ry, rh = gru_naive.gru(t["x"], t["h0"], t["w_ih"], t["w_hh"], t["b_ih"], t["b_hh"])
            outs, refs = (y, hT), (ry, rh)
        else:
            y, (hT, cT) = lstm(dev["x"], dev["h0"], dev["c0"], dev["w_ih"], dev["w_hh"], dev["b_ih"], dev["b_hh"],
                               backend="cuda")
            ry, (rh, rc) = lstm_naive.lstm(t["x"], t["h0"], t["c0"], t["w_ih"], t["w_hh"], t["b_ih"], t["b_hh"])
            outs, refs = (y, hT, cT), (ry, rh, rc)
    for o, r in zip(outs, refs):
        assert o.dtype == dtype and o.shape == r.shape
        torch.testing.assert_close(o.double().cpu(), r, rtol=TOL[dtype] * 10, atol=TOL[dtype] * 10)
