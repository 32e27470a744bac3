"""The `cuda` backend of the LSTM and GRU families (csrc/lstm/lstm_cuda.cu, csrc/gru/gru_cuda.cu).

GPU tests (`@pytest.mark.gpu`, run by bench/device_check.sh) compare outputs, final states and
every gradient with an fp64 reference (naive.py on upcast inputs), on both CUDA paths
(FASTRNN_CUDA_PATH=standard|persistent), with every buffer NaN-poisoned first
(FASTRNN_CUDA_POISON=1). Tolerance: the kernel's error is at most 2x PyTorch's own error in the
same dtype (naive.py run in that dtype on the GPU) plus a small atol.

CPU tests check that the build reports its CUDA code honestly and that asking for the cuda
backend without a GPU raises a clear error.
"""
import os
import re
import zlib

import pytest
import torch

import fastrnn
from fastrnn import _ext
from fastrnn.ops.gru import gru as _gru
from fastrnn.ops.lstm import lstm as _lstm

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "fp64": torch.float64}
# atol relative to the reference's largest magnitude, per dtype
ATOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2, torch.float64: 1e-10}

# (T, B, I, H, options): options among proj=P, lengths, reverse, nobias
CASES = [
    pytest.param(1, 1, 8, 16, {}, id="T1-B1-I8-H16"),
    pytest.param(5, 3, 7, 63, {}, id="T5-B3-I7-H63"),
    pytest.param(4, 3, 32, 500, {"lengths": True}, id="T4-B3-I32-H500-len"),
    pytest.param(3, 2, 16, 1024, {}, id="T3-B2-I16-H1024"),
    pytest.param(6, 4, 10, 40, {"lengths": True, "reverse": True}, id="T6-B4-I10-H40-len-rev"),
    pytest.param(3, 64, 24, 96, {}, id="T3-B64-I24-H96"),
    pytest.param(4, 9, 12, 33, {"nobias": True}, id="T4-B9-I12-H33-nobias"),
    pytest.param(3, 65, 8, 32, {}, id="T3-B65-I8-H32"),  # B > 64: persistent refuses
]
PROJ_CASES = [
    pytest.param(5, 3, 9, 24, {"proj": 8}, id="T5-B3-I9-H24-P8"),
    pytest.param(6, 4, 10, 40, {"proj": 16, "lengths": True, "reverse": True}, id="T6-B4-I10-H40-P16-len-rev"),
]


def _persistent_refuses(T, B, I, H, opts, dtype):
    return B > 64 or H > 1024 or "proj" in opts or dtype == torch.float64


def _make(cell, T, B, I, H, opts, dtype, device, gen):
    gates = 4 if cell == "lstm" else 3
    P = opts.get("proj", H)
    s = H ** -0.5

    def r(*shape, scale=1.0):
        return (torch.rand(*shape, generator=gen, dtype=torch.float64) * 2 - 1) * scale

    t = {"x": r(T, B, I), "h0": r(B, P), "w_ih": r(gates * H, I, scale=s), "w_hh": r(gates * H, P, scale=s)}
    if cell == "lstm":
        t["c0"] = r(B, H)
    if not opts.get("nobias"):
        t["b_ih"] = r(gates * H, scale=s)
        t["b_hh"] = r(gates * H, scale=s)
    if "proj" in opts:
        t["w_hr"] = r(P, H, scale=s)
    lengths = None
    if opts.get("lengths"):
        lengths = torch.randint(1, T + 1, (B,), generator=gen)
        lengths[0] = T
        lengths[-1] = 1
    outs = {"y": r(T, B, P), "hT": r(B, P)}
    if cell == "lstm":
        outs["cT"] = r(B, H)
    return t, lengths, outs


def _run(cell, tensors, lengths, reverse, grads, dtype, device, backend):
    """Forward + backward with upstream grads `grads`; returns {name: tensor} in fp64."""
    ins = {k: v.to(device=device, dtype=dtype).requires_grad_(True) for k, v in tensors.items()}
    if cell == "lstm":
        y, (hT, cT) = _lstm(ins["x"], ins["h0"], ins["c0"], ins["w_ih"], ins["w_hh"], ins.get("b_ih"),
                                    ins.get("b_hh"), backend=backend, w_hr=ins.get("w_hr"), lengths=lengths,
                                    reverse=reverse)
        outs = {"y": y, "hT": hT, "cT": cT}
    else:
        y, hT = _gru(ins["x"], ins["h0"], ins["w_ih"], ins["w_hh"], ins.get("b_ih"), ins.get("b_hh"),
                            backend=backend, lengths=lengths, reverse=reverse)
        outs = {"y": y, "hT": hT}
    loss = sum((o.double() * grads[k].to(device)).sum() for k, o in outs.items())
    names = list(ins)
    gs = torch.autograd.grad(loss, [ins[n] for n in names])
    res = {k: o.detach().double() for k, o in outs.items()}
    res.update({"d" + n: g.double() for n, g in zip(names, gs)})
    return res


def _check(cell, T, B, I, H, opts, dtype, path, monkeypatch):
    device = torch.device("cuda")
    monkeypatch.setenv("FASTRNN_CUDA_PATH", path)
    monkeypatch.setenv("FASTRNN_CUDA_POISON", "1")
    gen = torch.Generator().manual_seed(zlib.crc32(f"{cell}-{T}-{B}-{I}-{H}-{dtype}".encode()))
    tensors, lengths, grads = _make(cell, T, B, I, H, opts, dtype, device, gen)
    reverse = bool(opts.get("reverse"))
    ref = _run(cell, tensors, lengths, reverse, grads, torch.float64, device, "reference")
    torch_own = _run(cell, tensors, lengths, reverse, grads, dtype, device, "reference")
    got = _run(cell, tensors, lengths, reverse, grads, dtype, device, "cuda")
    assert set(got) == set(ref)
    for k in ref:
        assert torch.isfinite(got[k]).all(), f"{k}: non-finite values (unwritten or overflowed elements)"
        err = (got[k] - ref[k]).abs().max().item()
        own = (torch_own[k] - ref[k]).abs().max().item()
        atol = ATOL[dtype] * max(1.0, ref[k].abs().max().item())
        assert err <= 2 * own + atol, f"{k}: max error {err:.3e} vs PyTorch's own {own:.3e} (+atol {atol:.1e})"


def _params(cases, dtypes, paths):
    out = []
    for c in cases:
        T, B, I, H, opts = c.values
        for dn in dtypes:
            for path in paths:
                if path == "persistent" and _persistent_refuses(T, B, I, H, opts, DTYPES[dn]):
                    continue
                out.append(pytest.param(T, B, I, H, opts, DTYPES[dn], path, id=f"{c.id}-{dn}-{path}"))
    return out


ALL = _params(CASES, ["fp32", "fp16", "bf16"], ["standard", "persistent", "auto"]) + _params(
    CASES[:3], ["fp64"], ["standard"])


@pytest.mark.gpu
@pytest.mark.parametrize("T,B,I,H,opts,dtype,path", ALL)
def test_lstm_cuda_matches_fp64_reference(T, B, I, H, opts, dtype, path, monkeypatch):
    _check("lstm", T, B, I, H, opts, dtype, path, monkeypatch)


@pytest.mark.gpu
@pytest.mark.parametrize("T,B,I,H,opts,dtype,path", _params(PROJ_CASES, ["fp32", "fp16", "bf16", "fp64"], ["standard"]))
def test_lstm_proj_cuda_matches_fp64_reference(T, B, I, H, opts, dtype, path, monkeypatch):
    _check("lstm", T, B, I, H, opts, dtype, path, monkeypatch)


@pytest.mark.gpu
@pytest.mark.parametrize("T,B,I,H,opts,dtype,path", ALL)
def test_gru_cuda_matches_fp64_reference(T, B, I, H, opts, dtype, path, monkeypatch):
    _check("gru", T, B, I, H, opts, dtype, path, monkeypatch)


@pytest.mark.gpu
@pytest.mark.parametrize("cell,opts,B", [
    pytest.param("lstm", {"proj": 8}, 3, id="lstm-proj"),
    pytest.param("lstm", {}, 65, id="lstm-B65"),
    pytest.param("gru", {}, 65, id="gru-B65"),
])
def test_forced_persistent_path_refuses_clearly(cell, opts, B, monkeypatch):
    monkeypatch.setenv("FASTRNN_CUDA_PATH", "persistent")
    gen = torch.Generator().manual_seed(0)
    tensors, lengths, grads = _make(cell, 3, B, 8, 16, opts, torch.float32, "cuda", gen)
    with pytest.raises(RuntimeError, match="persistent"):
        _run(cell, tensors, lengths, False, grads, torch.float32, torch.device("cuda"), "cuda")


@pytest.mark.gpu
def test_bad_path_variable_raises_value_error(monkeypatch):
    monkeypatch.setenv("FASTRNN_CUDA_PATH", "fastest")
    x = torch.zeros(2, 1, 4, device="cuda")
    h = torch.zeros(1, 4, device="cuda")
    w = torch.zeros(12, 4, device="cuda")
    with pytest.raises(ValueError, match="FASTRNN_CUDA_PATH"):
        _gru(x, h, w, w.clone(), backend="cuda")


@pytest.mark.gpu
def test_long_sequence_persistent_matches_standard(monkeypatch):
    """Many grid syncs in a row (T = 300): a missing barrier shows up as drift between paths."""
    gen = torch.Generator().manual_seed(1)
    tensors, lengths, grads = _make("lstm", 300, 5, 32, 256, {}, torch.float32, "cuda", gen)
    res = {}
    for path in ("standard", "persistent"):
        monkeypatch.setenv("FASTRNN_CUDA_PATH", path)
        res[path] = _run("lstm", tensors, lengths, False, grads, torch.float32, torch.device("cuda"), "cuda")
    for k in res["standard"]:
        a, b = res["standard"][k], res["persistent"][k]
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * max(1.0, a.abs().max().item())), k


# ---------------------------------------------------------------------------------------------
# CPU-runnable checks


def _ext_file():
    return getattr(_ext._C, "__file__", None)


@pytest.mark.skipif(not _ext.has_ext(), reason="fastrnn._C is not built")
def test_with_cuda_matches_linked_cuda_code():
    """with_cuda() says True exactly when the CUDA host functions are in the binary."""
    path = _ext_file()
    assert path and os.path.exists(path)
    with open(path, "rb") as f:
        blob = f.read()
    has_cuda_symbols = re.search(rb"lstm_fwd_cuda", blob) is not None and re.search(rb"gru_bwd_cuda", blob) is not None
    assert bool(_ext._C.with_cuda()) == has_cuda_symbols
    assert fastrnn.built_with_cuda() == has_cuda_symbols


@pytest.mark.skipif(not _ext.has_ext(), reason="fastrnn._C is not built")
def test_built_with_cuda_where_the_toolchain_allows():
    """setup.py's auto mode must compile the CUDA sources when torch has CUDA and nvcc exists."""
    if os.environ.get("FASTRNN_BUILD", "auto") == "cpu" or torch.version.cuda is None:
        pytest.skip("CPU-only build requested or torch without CUDA")
    cuda_home = os.environ.get("CUDA_HOME", "/usr/local/cuda")
    if not os.path.exists(os.path.join(cuda_home, "bin", "nvcc")):
        pytest.skip("no CUDA toolkit here")
    assert _ext._C.with_cuda() is True


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU behaviour")
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_cuda_backend_without_gpu_raises_clearly(cell):
    gen = torch.Generator().manual_seed(0)
    tensors, lengths, grads = _make(cell, 2, 1, 4, 4, {}, torch.float32, "cpu", gen)
    with pytest.raises(RuntimeError, match="cuda"):
        _run(cell, tensors, lengths, False, grads, torch.float32, torch.device("cpu"), "cuda")
