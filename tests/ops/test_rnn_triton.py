"""The triton LSTM/GRU backend against naive.py in fp64 (outputs, final states, every gradient).

Runs on every CI run under TRITON_INTERPRET=1 (tests/conftest.py) on CPU tensors, and with real
compilation on a GPU (the `gpu` tests at realistic sizes; bench/device_check.sh). Tolerance rule:
the kernel's error against fp64 is at most 2x PyTorch's own error in the same dtype (naive.py run
in that dtype) plus a small atol scaled by the reference's magnitude. Every output the kernels
write starts as NaN (the hosts allocate with torch.full(nan)), so an unwritten element fails.
"""
import math

import pytest
import torch

import fastrnn
from fastrnn import backends
from fastrnn.ops import _triton_utils as tu
from fastrnn.ops.gru import naive as gru_naive
from fastrnn.ops.lstm import naive as lstm_naive

pytestmark = pytest.mark.skipif(not backends.is_available("triton"),
                                reason="triton backend needs a GPU or TRITON_INTERPRET=1")

DEV = "cuda" if torch.cuda.is_available() else "cpu"
ATOL = {torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}
DT = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

# Block configs that force the other regimes at small H (see _triton_utils.plan):
TILED = tu.BlockConfig(16, 16, 32)         # H split over programs (one launch per step), 2 K-chunks
KLOOP = tu.BlockConfig(16, 64, 16)         # one program holds H=40 but streams W_hh in K-chunks
BTILES = tu.BlockConfig(16, 64, 64)        # several batch tiles (B > 16)


def make_inputs(cell, T, B, I, H, bias=True, seed=0, device=DEV):
    g = torch.Generator().manual_seed(seed)
    G = 4 if cell == "lstm" else 3
    k = 1 / math.sqrt(H)
    def u(*s):
        return ((torch.rand(*s, generator=g, dtype=torch.float64) * 2 - 1) * k).to(device)

    t = {"x": torch.randn(T, B, I, generator=g, dtype=torch.float64).to(device),
         "h0": (torch.randn(B, H, generator=g, dtype=torch.float64) * 0.5).to(device),
         "w_ih": u(G * H, I), "w_hh": u(G * H, H),
         "b_ih": u(G * H) if bias else None, "b_hh": u(G * H) if bias else None}
    if cell == "lstm":
        t["c0"] = (torch.randn(B, H, generator=g, dtype=torch.float64) * 0.5).to(device)
    return t


def run(cell, t, dtype, backend, lengths=None, reverse=False, seed=1):
    """Outputs and the gradient of a random linear loss w.r.t. every present input."""
    leaves = {k: (v.detach().to(dtype).requires_grad_() if v is not None else None) for k, v in t.items()}
    L = leaves
    if backend == "naive":   # PyTorch itself in this dtype, or the fp64 ground truth
        # reverse=True: reverse each sequence, run forwards, reverse y back (inside autograd)
        x = reverse_each(L["x"], lengths) if reverse else L["x"]
        if cell == "lstm":
            y, (hT, cT) = lstm_naive.lstm(x, L["h0"], L["c0"], L["w_ih"], L["w_hh"], L["b_ih"],
                                          L["b_hh"], None, lengths)
            outs = {"y": y, "hT": hT, "cT": cT}
        else:
            y, hT = gru_naive.gru(x, L["h0"], L["w_ih"], L["w_hh"], L["b_ih"], L["b_hh"], lengths)
            outs = {"y": y, "hT": hT}
        if reverse:
            outs["y"] = reverse_each(outs["y"], lengths)
    elif cell == "lstm":
        y, (hT, cT) = fastrnn.ops.lstm(L["x"], L["h0"], L["c0"], L["w_ih"], L["w_hh"], L["b_ih"],
                                       L["b_hh"], backend=backend, lengths=lengths, reverse=reverse)
        outs = {"y": y, "hT": hT, "cT": cT}
    else:
        y, hT = fastrnn.ops.gru(L["x"], L["h0"], L["w_ih"], L["w_hh"], L["b_ih"], L["b_hh"],
                                backend=backend, lengths=lengths, reverse=reverse)
        outs = {"y": y, "hT": hT}
    g = torch.Generator().manual_seed(seed)
    loss = sum((o * torch.randn(o.shape, generator=g, dtype=torch.float64).to(o.device, dtype)).sum()
               for o in outs.values())
    present = [k for k in leaves if leaves[k] is not None]
    grads = torch.autograd.grad(loss, [leaves[k] for k in present])
    outs.update({"d" + k: gr for k, gr in zip(present, grads)})
    return outs


def reverse_each(x, lengths):
    if lengths is None:
        return x.flip(0)
    out = x.clone()
    for b, n in enumerate(lengths.tolist()):
        out[:n, b] = x[:n, b].flip(0)
    return out


def compare(cell, t, dtype, lengths=None, reverse=False):
    """Assert the triton backend meets the tolerance rule on every output and gradient."""
    if lengths is not None:
        lengths = torch.tensor(lengths, device=t["x"].device)
    truth = run(cell, t, torch.float64, "naive", lengths, reverse)
    torch_err = run(cell, t, dtype, "naive", lengths, reverse)
    got = run(cell, t, dtype, "triton", lengths, reverse)
    assert set(got) == set(truth)
    for k, ref in truth.items():
        out = got[k]
        assert out.dtype == dtype and out.shape == ref.shape, k
        assert torch.isfinite(out).all(), f"{k}: non-finite values (an element left unwritten?)"
        err = (out.double() - ref).abs().max().item()
        base = (torch_err[k].double() - ref).abs().max().item()
        tol = 2 * base + ATOL[dtype] * max(1.0, ref.abs().max().item())
        assert err <= tol, f"{k}: error {err:.3g} > 2 x PyTorch's {base:.3g} + atol (tol {tol:.3g})"
    return got


@pytest.fixture
def blocks(monkeypatch):
    def use(cfg):
        monkeypatch.setattr(tu, "OVERRIDE", cfg)
    return use


# (T, B, I, H, bias, lengths, reverse, block config, dtype)
CASES = [
    pytest.param(1, 3, 5, 7, True, None, False, None, "fp32", id="T1-B3-I5-H7-cell-fp32"),
    pytest.param(1, 1, 8, 63, False, None, False, None, "fp32", id="T1-B1-I8-H63-cell-nobias-fp32"),
    pytest.param(6, 1, 5, 63, True, None, False, None, "fp32", id="T6-B1-I5-H63-fp32"),
    pytest.param(5, 3, 9, 40, False, None, False, None, "fp32", id="T5-B3-I9-H40-nobias-fp32"),
    pytest.param(4, 3, 6, 40, True, None, False, TILED, "fp32", id="T4-B3-I6-H40-Htiled-fp32"),
    pytest.param(4, 3, 6, 40, True, None, False, KLOOP, "fp32", id="T4-B3-I6-H40-Kloop-fp32"),
    pytest.param(3, 20, 4, 24, True, None, False, BTILES, "fp32", id="T3-B20-I4-H24-Btiled-fp32"),
    pytest.param(6, 3, 4, 33, True, [6, 2, 4], False, None, "fp32", id="T6-B3-H33-ragged-fp32"),
    pytest.param(4, 3, 4, 40, False, [2, 4, 1], False, TILED, "fp32",
                 id="T4-B3-H40-ragged-Htiled-nobias-fp32"),
    pytest.param(6, 3, 4, 20, True, [4, 6, 1], True, None, "fp32", id="T6-B3-H20-ragged-reverse-fp32"),
    pytest.param(5, 3, 6, 32, True, None, False, None, "fp16", id="T5-B3-I6-H32-fp16"),
    pytest.param(5, 3, 6, 32, True, [5, 3, 2], False, None, "bf16", id="T5-B3-H32-ragged-bf16"),
    pytest.param(1, 3, 6, 32, True, None, False, None, "bf16", id="T1-B3-H32-cell-bf16"),
    pytest.param(4, 2, 6, 40, True, None, False, TILED, "fp16", id="T4-B2-H40-Htiled-fp16"),
]


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("T,B,I,H,bias,lengths,reverse,cfg,dt", CASES)
def test_matches_reference(cell, T, B, I, H, bias, lengths, reverse, cfg, dt, blocks):
    blocks(cfg)
    if cfg is TILED:
        assert not tu.persistent(tu.plan(B, H), H)   # the case really splits H over programs
    compare(cell, make_inputs(cell, T, B, I, H, bias), DT[dt], lengths, reverse)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("cfg", [pytest.param(None, id="persistent"), pytest.param(TILED, id="Htiled")])
def test_inference_path_matches_training_path(cell, cfg, blocks):
    """Without grad the state lives in a 2-slot ring instead of [T+1] slots: same results."""
    blocks(cfg)
    t = make_inputs(cell, 5, 3, 4, 40)
    f = {k: v.float() if v is not None else None for k, v in t.items()}
    lengths = torch.tensor([5, 3, 1], device=DEV)
    args = [f["x"], f["h0"]] + ([f["c0"]] if cell == "lstm" else []) + \
        [f["w_ih"], f["w_hh"], f["b_ih"], f["b_hh"]]
    op = fastrnn.ops.lstm if cell == "lstm" else fastrnn.ops.gru
    with torch.no_grad():
        y0, s0 = op(*args, backend="triton", lengths=lengths)
    grad_args = [a.clone().requires_grad_() for a in args]
    y1, s1 = op(*grad_args, backend="triton", lengths=lengths)
    assert torch.isfinite(y0).all()
    # (plain comparisons: torch.testing's first import costs ~10 s of CI on these machines)
    assert torch.equal(y0, y1.detach())
    for a, b in zip(s0 if cell == "lstm" else [s0], s1 if cell == "lstm" else [s1]):
        assert torch.equal(a, b.detach())


def test_autotune_space_and_its_switch(monkeypatch):
    # Up to six tile configs (none past 2048 accumulator rows x units); FASTRNN_TRITON_AUTOTUNE=0
    # (bench/device_check.sh's Triton test stage) keeps one, so those tests compile one variant.
    for bb in (16, 32, 64):
        full = tu.tile_configs(bb)
        assert 1 < len(full) <= 6
        assert all(bb * c.kwargs["BLOCK_H"] <= 2048 for c in full)
        monkeypatch.setenv("FASTRNN_TRITON_AUTOTUNE", "0")
        assert [c.kwargs for c in tu.tile_configs(bb)] == [full[0].kwargs]
        monkeypatch.delenv("FASTRNN_TRITON_AUTOTUNE")


def test_check_refuses_what_it_does_not_run():
    from fastrnn.ops.gru import triton as gru_triton
    from fastrnn.ops.lstm import triton as lstm_triton

    call = dict(T=3, B=2, I=4, H=8, P=8, has_proj=False, has_lengths=False)
    assert lstm_triton.check(dtype=torch.float32, **call) is None
    assert lstm_triton.check(dtype=torch.bfloat16, **call) is None
    assert "float64" in lstm_triton.check(dtype=torch.float64, **call)
    assert "proj" in lstm_triton.check(dtype=torch.float32, **dict(call, P=4, has_proj=True))
    assert gru_triton.check(dtype=torch.float16, T=3, B=2, I=4, H=8, has_lengths=True) is None
    assert "float64" in gru_triton.check(dtype=torch.float64, T=3, B=2, I=4, H=8, has_lengths=False)
    t = make_inputs("lstm", 2, 2, 3, 4)
    with pytest.raises(RuntimeError, match="triton"):
        fastrnn.ops.lstm(t["x"], t["h0"], t["c0"], t["w_ih"], t["w_hh"], backend="triton")


def test_cell_ops_use_the_cell_kernel():
    """lstm_cell/gru_cell (T = 1) against one step of the reference."""
    t = make_inputs("lstm", 1, 3, 5, 16)
    f = {k: v.float() for k, v in t.items()}
    h1, c1 = fastrnn.ops.lstm_cell(f["x"][0], f["h0"], f["c0"], f["w_ih"], f["w_hh"], f["b_ih"],
                                   f["b_hh"], backend="triton")
    _, (h_ref, c_ref) = lstm_naive.lstm(t["x"], t["h0"], t["c0"], t["w_ih"], t["w_hh"], t["b_ih"], t["b_hh"])
    assert (h1.double() - h_ref).abs().max() < 1e-5
    assert (c1.double() - c_ref).abs().max() < 1e-5
    t = make_inputs("gru", 1, 3, 5, 16)
    f = {k: v.float() for k, v in t.items()}
    h1 = fastrnn.ops.gru_cell(f["x"][0], f["h0"], f["w_ih"], f["w_hh"], f["b_ih"], f["b_hh"],
                              backend="triton")
    _, h_ref = gru_naive.gru(t["x"], t["h0"], t["w_ih"], t["w_hh"], t["b_ih"], t["b_hh"])
    assert (h1.double() - h_ref).abs().max() < 1e-5


# ----------------------------------------------------------------------------------------------
# Real compilation on a GPU at realistic sizes (bench/device_check.sh)
# ----------------------------------------------------------------------------------------------

GPU_CASES = [
    pytest.param(32, 16, 768, 768, None, "fp16", id="T32-B16-H768-fp16"),
    pytest.param(32, 64, 1024, 1024, None, "bf16", id="T32-B64-H1024-bf16"),
    pytest.param(16, 3, 512, 1024, [16, 9, 1], "fp16", id="T16-B3-I512-H1024-ragged-fp16"),
    pytest.param(24, 1, 256, 256, None, "fp32", id="T24-B1-H256-persistent-fp32"),
    pytest.param(24, 2, 128, 64, [24, 7], "bf16", id="T24-B2-H64-resident-ragged-bf16"),
    pytest.param(1, 64, 1024, 1024, None, "fp16", id="T1-B64-H1024-cell-fp16"),
]


@pytest.mark.gpu
@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("T,B,I,H,lengths,dt", GPU_CASES)
def test_gpu_matches_reference(cell, T, B, I, H, lengths, dt):
    compare(cell, make_inputs(cell, T, B, I, H, device="cuda"), DT[dt], lengths)


# ----------------------------------------------------------------------------------------------
# Real compilation for sm_90 without a GPU (the interpreter never runs the Triton compiler)
# ----------------------------------------------------------------------------------------------

_COMPILE_SCRIPT = r'''
import sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from fastrnn.ops.gru import triton as G
from fastrnn.ops.lstm import triton as L

target = GPUTarget("cuda", 90, 32)
i32 = "i32"


def sig(names, types):
    return dict(zip(names, types))


def compile_one(fn, s, consts, num_warps):
    s = dict(s, **{k: "constexpr" for k in consts})
    triton.compile(ASTSource(fn, s, consts), target=target, options={"num_warps": num_warps})


for dt, f32, bb, bh, bk, res, w in [("fp16", False, 16, 64, 64, True, 8),
                                    ("bf16", False, 32, 64, 32, False, 8),
                                    ("fp32", True, 16, 32, 32, False, 4)]:
    p = "*" + dt
    c = dict(HAS_LENGTHS=True, DOT_F32=f32, BLOCK_B=bb, BLOCK_H=bh, BLOCK_K=bk, RESIDENT=res)
    compile_one(L.lstm_fwd_kernel, sig(L.lstm_fwd_kernel.arg_names[:12],
                ["*fp32", p, "*fp32", "*fp32", p, "*fp32", "*i64", i32, i32, i32, i32, i32]),
                dict(c, SAVE=True), w)
    compile_one(L.lstm_bwd_kernel, sig(L.lstm_bwd_kernel.arg_names[:13],
                [p, p, "*fp32", "*fp32", "*fp32", "*fp32", "*fp32", "*i64", i32, i32, i32, i32, i32]), c, w)
    compile_one(G.gru_fwd_kernel, sig(G.gru_fwd_kernel.arg_names[:12],
                ["*fp32", p, "*fp32", "*fp32", p, "*fp32", "*i64", i32, i32, i32, i32, i32]),
                dict(c, SAVE=True), w)
    compile_one(G.gru_bwd_kernel, sig(G.gru_bwd_kernel.arg_names[:12],
                [p, p, "*fp32", "*fp32", "*fp32", "*fp32", "*i64", i32, i32, i32, i32, i32]), c, w)
    compile_one(L.lstm_cell_fwd_kernel, sig(L.lstm_cell_fwd_kernel.arg_names[:9],
                ["*fp32", p, p, p, p, "*fp32", "*fp32", i32, i32]), dict(SAVE=True, BLOCK=1024), 4)
    compile_one(L.lstm_cell_bwd_kernel, sig(L.lstm_cell_bwd_kernel.arg_names[:10],
                [p, p, p, "*fp32", p, "*fp32", "*fp32", p, i32, i32]), dict(BLOCK=1024), 4)
    compile_one(G.gru_cell_fwd_kernel, sig(G.gru_cell_fwd_kernel.arg_names[:8],
                ["*fp32", "*fp32", p, p, p, "*fp32", i32, i32]), dict(SAVE=True, BLOCK=1024), 4)
    compile_one(G.gru_cell_bwd_kernel, sig(G.gru_cell_bwd_kernel.arg_names[:8],
                [p, p, "*fp32", p, "*fp32", "*fp32", i32, i32]), dict(BLOCK=1024), 4)
print("compiled")
'''


@pytest.mark.slow
def test_kernels_compile_for_sm90():
    """Every kernel goes through the real Triton compiler for an H100 (no GPU needed), in a fresh
    process because this one runs the interpreter. Catches what the interpreter lets through
    (types, constexpr misuse, layouts)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, "-c", _COMPILE_SCRIPT], env=env, capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0 and "compiled" in r.stdout, r.stderr[-3000:]
