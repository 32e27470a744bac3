"""fastrnn.ops.attention: every kernel backend against the fp64 naive.py reference."""
import pytest
import torch

import fastrnn
from fastrnn import backends
from fastrnn.ops.attention import IMPLS, KINDS, attention, naive

KERNELS = [pytest.param("cpu", id="cpu"), pytest.param("triton", id="triton"),
           pytest.param("cuda", id="cuda", marks=pytest.mark.gpu)]


def _skip_unless(backend):
    if not backends.is_available(backend):
        pytest.skip(f"backend {backend!r} not available here ({backends.available()})")


def _device(backend):
    return "cuda" if backend == "cuda" else "cpu"


def _make(kind, B, Tq, Tk, Dq, Dk, Dv, H, masked, seed=0):
    """fp64 inputs on the CPU: query, keys, values, mask and the kind's weights."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    if kind == "dot":
        Dk = Dq
    ins = {"query": r(B, Tq, Dq), "keys": r(B, Tk, Dk), "values": r(B, Tk, Dv)}
    w = {"dot": {}, "general": {"weight": r(Dq, Dk) / Dk ** 0.5},
         "low_rank": {"u": r(H, Dq) / Dq ** 0.5, "v": r(H, Dk) / Dk ** 0.5},
         "additive": {"w_query": r(H, Dq) / Dq ** 0.5, "w_key": r(H, Dk) / Dk ** 0.5,
                      "v_score": r(H)}}[kind]
    ins.update(w)
    mask = None
    if masked:
        # ragged lengths, and for B > 1 a fully masked row (zero weights and context, no NaN)
        lengths = torch.randint(1, Tk + 1, (B,), generator=g)
        if B > 1:
            lengths[1] = 0
        mask = torch.arange(Tk).unsqueeze(0) < lengths.unsqueeze(1)
    return ins, mask


def _run(ins, mask, kind, backend, dtype, device, upstream, key_proj=False):
    """Outputs and gradients of every input (and key_proj when used)."""
    leaves = {k: t.to(device=device, dtype=dtype).requires_grad_(True) for k, t in ins.items()}
    kw = dict(leaves)
    m = mask.to(device) if mask is not None else None
    if key_proj:
        kp = naive.project_keys(kw["keys"].detach(), kind, kw.get("weight"), kw.get("v"),
                                kw.get("w_key")).detach().requires_grad_(True)
        kw.pop("w_key", None)
        leaves["key_proj"] = kp
        kw["key_proj"] = kp
    if backend == "naive":
        ctx, w = naive.attention(kw.pop("query"), kw.pop("keys"), kw.pop("values"), kind=kind,
                                 mask=m, **kw)
    else:
        ctx, w = attention(kw.pop("query"), kw.pop("keys"), kw.pop("values"), kind=kind, mask=m,
                           backend=backend, **kw)
    gc, gw = (u.to(device=device, dtype=dtype) for u in upstream)
    names = [n for n, t in leaves.items()]
    grads = torch.autograd.grad((ctx * gc).sum() + (w * gw).sum(), [leaves[n] for n in names],
                                allow_unused=True)
    out = {"context": ctx, "weights": w}
    out.update({f"d_{n}": g for n, g in zip(names, grads)})
    return {k: v.detach().double().cpu() for k, v in out.items() if v is not None}


def _assert_rule(got, ref64, torch_same_dtype, atol):
    """Tolerance rule: error vs fp64 <= 2x PyTorch's own error in the same dtype + atol, the atol
    scaled by the output's magnitude (summation order alone moves large fp32 sums by ulps)."""
    assert set(got) == set(ref64), f"outputs differ: {sorted(got)} vs {sorted(ref64)}"
    for name in ref64:
        assert torch.isfinite(got[name]).all(), f"{name} has non-finite values"
        err = (got[name] - ref64[name]).abs().max().item()
        terr = (torch_same_dtype[name] - ref64[name]).abs().max().item()
        tol = 2 * terr + atol * max(1.0, ref64[name].abs().max().item())
        assert err <= tol, f"{name}: error {err:.3g} > 2 x torch's {terr:.3g} + scaled {atol}"


SIZES = [  # B, Tq, Tk, Dq, Dk, Dv, H
    pytest.param((1, 1, 1, 4, 5, 3, 6), id="B1-Tq1-Tk1"),
    pytest.param((3, 1, 7, 63, 17, 5, 33), id="B3-Tq1-Tk7-D63-H33"),
    pytest.param((3, 7, 7, 9, 8, 63, 33), id="B3-Tq7-Tk7-Dv63-H33"),
    # B*Tq = 36 rows: past the CUDA forward's few-rows launch (1024 threads for <= 32 rows),
    # so both of its block sizes are checked.
    pytest.param((4, 9, 23, 16, 12, 10, 20), id="B4-Tq9-Tk23-H20"),
]


def _fp32_cases():
    # The interpreter costs ~5 ms per program instance: triton gets the masked cases of the
    # three small sizes, unmasked at B=1 only.
    for bp in KERNELS:
        be = bp.values[0]
        for sp in SIZES:
            for masked in (False, True):
                if be == "triton" and (sp.id.startswith("B4") or (not masked and sp.id != "B1-Tq1-Tk1")):
                    continue
                for kind in KINDS:
                    yield pytest.param(be, masked, kind, sp.values[0], marks=bp.marks,
                                       id=f"{sp.id}-{kind}-{'mask' if masked else 'nomask'}-{be}")


@pytest.mark.parametrize("backend,masked,kind,size", list(_fp32_cases()))
def test_fp32_matches_reference(backend, masked, kind, size):
    _skip_unless(backend)
    B, Tq, Tk, Dq, Dk, Dv, H = size
    ins, mask = _make(kind, *size, masked)
    g = torch.Generator().manual_seed(1)
    upstream = (torch.randn(B, Tq, Dv, generator=g), torch.randn(B, Tq, Tk, generator=g))
    ref64 = _run(ins, mask, kind, "naive", torch.float64, "cpu", upstream)
    torch32 = _run(ins, mask, kind, "naive", torch.float32, "cpu", upstream)
    got = _run(ins, mask, kind, backend, torch.float32, _device(backend), upstream)
    _assert_rule(got, ref64, torch32, atol=2e-5)
    if masked and B > 1:  # the fully masked row
        assert (got["weights"][1] == 0).all() and (got["context"][1] == 0).all()


@pytest.mark.parametrize("kind", ["dot", "additive"])
def test_triton_multi_block_tiles(kind):
    """Sizes past one tile in every dim (Tq, Tk > 16, D > 32, Dv > 64): the online softmax
    across key blocks, and every backward grid, under the interpreter."""
    _skip_unless("triton")
    size = (1, 17, 20, 40, 40, 70, 40)
    ins, mask = _make(kind, *size, masked=True, seed=11)
    mask[0, :] = True
    mask[0, 18:] = False
    g = torch.Generator().manual_seed(6)
    upstream = (torch.randn(1, 17, 70, generator=g), torch.randn(1, 17, 20, generator=g))
    ref64 = _run(ins, mask, kind, "naive", torch.float64, "cpu", upstream)
    torch32 = _run(ins, mask, kind, "naive", torch.float32, "cpu", upstream)
    got = _run(ins, mask, kind, "triton", torch.float32, "cpu", upstream)
    _assert_rule(got, ref64, torch32, atol=2e-5)


@pytest.mark.parametrize("backend", [pytest.param("cpu", id="cpu"),
                                     pytest.param("cuda", id="cuda", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("size", SIZES[1:3])
def test_fp64_matches_reference(backend, kind, size):
    _skip_unless(backend)
    B, Tq, Tk = size[:3]
    ins, mask = _make(kind, *size, masked=True, seed=3)
    g = torch.Generator().manual_seed(2)
    upstream = (torch.randn(B, Tq, size[5], generator=g, dtype=torch.float64),
                torch.randn(B, Tq, Tk, generator=g, dtype=torch.float64))
    ref64 = _run(ins, mask, kind, "naive", torch.float64, "cpu", upstream)
    got = _run(ins, mask, kind, backend, torch.float64, _device(backend), upstream)
    _assert_rule(got, ref64, ref64, atol=1e-10)


@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck_cpu_fp64(kind):
    _skip_unless("cpu")
    ins, mask = _make(kind, 2, 3, 4, 5, 4, 3, 6, masked=True, seed=5)
    mask[0, 0] = True
    names = list(ins)

    def f(*ts):
        kw = dict(zip(names, ts))
        return attention(kw.pop("query"), kw.pop("keys"), kw.pop("values"), kind=kind, mask=mask,
                         backend="cpu", **kw)

    ts = [t.clone().requires_grad_(True) for t in ins.values()]
    assert torch.autograd.gradcheck(f, ts, eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("backend,kind", [
    pytest.param(be, kind, id=f"{kind}-{be}", marks=bp.marks)
    for bp in KERNELS for be in bp.values for kind in ("general", "low_rank", "additive")
    if be != "triton" or kind == "additive"])  # interpreter time: triton takes the one with tanh
def test_key_proj_path_equals_plain_path(backend, kind):
    _skip_unless(backend)
    size = (3, 2, 7, 6, 5, 4, 9)
    ins, mask = _make(kind, *size, masked=True, seed=7)
    g = torch.Generator().manual_seed(4)
    upstream = (torch.randn(3, 2, 4, generator=g), torch.randn(3, 2, 7, generator=g))
    dt = torch.float32 if backend == "triton" else torch.float64
    plain = _run(ins, mask, kind, backend, dt, _device(backend), upstream)
    proj = _run(ins, mask, kind, backend, dt, _device(backend), upstream, key_proj=True)
    ref = _run(ins, mask, kind, "naive", dt, "cpu", upstream, key_proj=True)
    tol = 1e-5 if dt == torch.float32 else 1e-10
    for name in ("context", "weights", "d_query", "d_values") + \
            tuple(k for k in proj if k.startswith("d_") and k not in ("d_keys",)):
        torch.testing.assert_close(proj[name], ref[name], atol=tol, rtol=tol)
        if name in plain:
            torch.testing.assert_close(proj[name], plain[name], atol=tol, rtol=tol)
    # the chain rule through key_proj gives keys the same gradient as the plain path
    w_map = {"general": ins.get("weight"), "low_rank": ins.get("v"), "additive": ins.get("w_key")}[kind]
    d_keys = plain["d_keys"] - proj.get("d_keys", torch.zeros_like(plain["d_keys"]))
    torch.testing.assert_close(d_keys, proj["d_key_proj"] @ w_map.double(), atol=tol, rtol=tol)


def test_cpu_kernel_writes_every_output():
    """Call the C++ kernel directly: outputs are NaN-filled before it runs, so any element it
    leaves unwritten shows up here."""
    _skip_unless("cpu")
    from fastrnn import _ext

    C = _ext._C
    B, Tq, Tk, D, Dv = 3, 4, 5, 7, 6
    qp, kp, v = torch.randn(B, Tq, D), torch.randn(B, Tk, D), torch.randn(B, Tk, Dv)
    mask = torch.ones(B, Tk, dtype=torch.bool)
    mask[1] = False
    mask[2, 3:] = False
    for vs in (None, torch.randn(D)):
        ctx, w = C.attention_fwd(qp, kp, v, mask, vs, True)
        assert torch.isfinite(ctx).all() and torch.isfinite(w).all()
        assert (w[1] == 0).all() and (w[2, :, 3:] == 0).all()
        torch.testing.assert_close(w.sum(-1)[[0, 2]], torch.ones(2, Tq))
        grads = C.attention_bwd(torch.randn(B, Tq, Dv), torch.randn(B, Tq, Tk), qp, kp, v, mask,
                                vs, w, [])
        for gr in grads[:3] + (grads[3:] if vs is not None else []):
            assert torch.isfinite(gr).all()


def test_triton_kernels_write_every_output():
    _skip_unless("triton")
    from fastrnn.ops.attention import triton as attn_triton

    B, Tq, Tk, D, Dv = 2, 3, 5, 7, 6
    qp, kp, v = torch.randn(B, Tq, D), torch.randn(B, Tk, D), torch.randn(B, Tk, Dv)
    mask = torch.tensor([[True] * 5, [False] * 5])
    ctx, w, saved = attn_triton.attention_fwd(qp, kp, v, mask, torch.randn(D), True)
    assert torch.isfinite(ctx).all() and torch.isfinite(w).all()
    assert (w[1] == 0).all() and (ctx[1] == 0).all()
    grads = attn_triton.attention_bwd(torch.randn(B, Tq, Dv), torch.randn(B, Tq, Tk), qp, kp, v,
                                      mask, torch.randn(D), w, saved)
    assert all(torch.isfinite(gr).all() for gr in grads)


def test_values_default_to_keys_and_default_backend():
    ins, mask = _make("general", 2, 3, 4, 5, 5, 5, 0, masked=True)
    ctx, w = attention(ins["query"], ins["keys"], kind="general", mask=mask, weight=ins["weight"])
    ref_ctx, ref_w = naive.attention(ins["query"], ins["keys"], kind="general", mask=mask,
                                     weight=ins["weight"])
    torch.testing.assert_close(ctx, ref_ctx)
    torch.testing.assert_close(w, ref_w)
    expect = "cpu" if backends.is_available("cpu") else "reference"
    impl = backends.pick("attention", IMPLS, torch.device("cpu"), None, dtype=torch.float64,
                         kind="dot", B=1, Tq=1, Tk=1, Dq=1, Dk=1, D=1, Dv=1)
    assert impl.name == expect


def _bad_calls():
    q, k = torch.randn(2, 3, 4), torch.randn(2, 5, 4)
    return [
        pytest.param(dict(query=q[0], keys=k, kind="dot"), ValueError, "query must have shape",
                     id="query-2d"),
        pytest.param(dict(query=q, keys=torch.randn(3, 5, 4), kind="dot"), ValueError,
                     "keys must have batch size", id="keys-batch"),
        pytest.param(dict(query=q, keys=k, kind="dot", values=torch.randn(2, 4, 3)), ValueError,
                     "values must have shape", id="values-T"),
        pytest.param(dict(query=q, keys=k.double(), kind="dot"), TypeError, "keys has dtype",
                     id="keys-dtype"),
        pytest.param(dict(query=q, keys=k, kind="dot", mask=torch.ones(2, 5)), TypeError,
                     "mask must be a bool", id="mask-dtype"),
        pytest.param(dict(query=q, keys=k, kind="dot", mask=torch.ones(2, 4, dtype=torch.bool)),
                     ValueError, "mask must have shape", id="mask-shape"),
        pytest.param(dict(query=q, keys=k, kind="cosine"), ValueError, "kind must be one of",
                     id="kind"),
        pytest.param(dict(query=q, keys=k, kind="general"), ValueError, "needs the argument weight",
                     id="general-no-weight"),
        pytest.param(dict(query=q, keys=k, kind="general", weight=torch.randn(4, 3)), ValueError,
                     "weight must have shape", id="general-weight-shape"),
        pytest.param(dict(query=q, keys=k, kind="additive", w_query=torch.randn(6, 4),
                          w_key=torch.randn(6, 4), v_score=torch.randn(5)), ValueError,
                     "v_score must have shape", id="additive-v_score"),
        pytest.param(dict(query=q, keys=k, kind="additive", w_query=torch.randn(6, 4),
                          v_score=torch.randn(6), key_proj=torch.randn(2, 5, 7)), ValueError,
                     "key_proj must have shape", id="additive-key_proj"),
        pytest.param(dict(query=q.int(), keys=k, kind="dot"), TypeError, "floating-point",
                     id="query-int"),
    ]


@pytest.mark.parametrize("call,exc,msg", _bad_calls())
def test_bad_input_raises(call, exc, msg):
    with pytest.raises(exc, match=msg):
        attention(call.pop("query"), call.pop("keys"), call.pop("values", None), **call)


def test_explicit_backend_that_cannot_run_raises():
    q = torch.randn(1, 1, 2, dtype=torch.float16)
    with pytest.raises(RuntimeError, match="cannot run this call"):
        attention(q, q, kind="dot", backend="cpu")


@pytest.mark.parametrize("backend", ["cpu", "triton"])
def test_additive_never_materializes_b_tq_tk_h(backend):
    """Peak bytes of live tensors during forward+backward stay well under one [B,Tq,Tk,H]
    tensor, which the eager reference allocates several of."""
    _skip_unless(backend)
    from fastrnn.bench.attention import _LiveBytes

    B, Tq, Tk, H = 1, 40, 40, 256   # extra memory O(B*Tq*Tk + B*(Tq+Tk)*H) vs O(B*Tq*Tk*H)
    ins, mask = _make("additive", B, Tq, Tk, 8, 8, 8, H, masked=True)
    leaves = [t.float().requires_grad_(True) for t in ins.values()]
    big = B * Tq * Tk * H * 4

    def peak(op, **kw):
        q, k, v, wq, wk, vs = leaves
        mode = _LiveBytes()
        with mode:
            ctx, w = op(q, k, v, kind="additive", mask=mask, w_query=wq, w_key=wk, v_score=vs,
                        **kw)
            torch.autograd.grad(ctx.sum() + w.sum(), leaves)
        return mode.peak

    assert peak(naive.attention) >= 2 * big  # the tracker sees the reference's big tensors
    assert peak(attention, backend=backend) < big / 4
