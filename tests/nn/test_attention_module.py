"""fastrnn.Attention: owns the weights of a kind, calls the op, precompute() for decoders."""
import pytest
import torch

import fastrnn
from fastrnn import backends
from fastrnn.nn.attention import AttentionMemory
from fastrnn.ops.attention import KINDS, naive

BACKENDS = [pytest.param("reference", id="reference"), pytest.param("cpu", id="cpu"),
            pytest.param("triton", id="triton")]


def _module(kind, Dq=6, Dk=5, backend=None, dtype=torch.float64, **kw):
    torch.manual_seed(0)
    if kind == "dot":
        Dk = Dq
    return fastrnn.Attention(Dq, Dk, kind=kind, backend=backend, dtype=dtype, **kw), Dq, Dk


def _naive(mod, q, keys, values, mask):
    p = {n: t for n, t in mod.named_parameters()}
    return naive.attention(q, keys, values, kind=mod.kind, mask=mask, **p)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", KINDS)
def test_forward_and_grads_match_reference(kind, backend):
    if not backends.is_available(backend):
        pytest.skip(f"{backend} not available")
    dtype = torch.float32 if backend == "triton" else torch.float64
    mod, Dq, Dk = _module(kind, backend=backend, dtype=dtype, hidden_size=7, rank=3)
    B, Tq, Tk = 3, 4, 6
    q = torch.randn(B, Tq, Dq, dtype=dtype, requires_grad=True)
    keys = torch.randn(B, Tk, Dk, dtype=dtype, requires_grad=True)
    mask = torch.arange(Tk) < torch.tensor([[6], [2], [0]])
    ctx, w = mod(q, keys, mask=mask)
    ref_ctx, ref_w = _naive(mod, q, keys, None, mask)
    tol = dict(atol=2e-5, rtol=2e-5) if dtype == torch.float32 else {}
    torch.testing.assert_close(ctx, ref_ctx, **tol)
    torch.testing.assert_close(w, ref_w, **tol)
    params = [q, keys] + list(mod.parameters())
    g = torch.autograd.grad(ctx.sum() + (w * w).sum(), params)
    gr = torch.autograd.grad(ref_ctx.sum() + (ref_w * ref_w).sum(), params)
    for a, b in zip(g, gr):
        torch.testing.assert_close(a, b, **tol)


@pytest.mark.parametrize("kind", KINDS)
def test_precompute_memory_equals_plain_call_for_one_step_queries(kind):
    mod, Dq, Dk = _module(kind, hidden_size=5, rank=2)
    B, Tk = 2, 7
    keys = torch.randn(B, Tk, Dk, dtype=torch.float64)
    values = torch.randn(B, Tk, 3, dtype=torch.float64)
    mask = torch.arange(Tk) < torch.tensor([[7], [4]])
    mem = mod.precompute(keys, values, mask)
    assert isinstance(mem, AttentionMemory)
    assert (mem.key_proj is None) == (kind == "dot")
    for _ in range(2):  # two decoder steps reuse the memory
        q = torch.randn(B, Dq, dtype=torch.float64)
        ctx, w = mod(q, memory=mem)
        assert ctx.shape == (B, 3) and w.shape == (B, Tk)
        ref_ctx, ref_w = mod(q, keys, values, mask)
        torch.testing.assert_close(ctx, ref_ctx)
        torch.testing.assert_close(w, ref_w)
        assert (w[1, 4:] == 0).all()


@pytest.mark.parametrize("kind", ["general", "low_rank", "additive"])
def test_gradients_flow_through_precomputed_keys(kind):
    mod, Dq, Dk = _module(kind, hidden_size=5, rank=2)
    keys = torch.randn(2, 4, Dk, dtype=torch.float64, requires_grad=True)
    q = torch.randn(2, Dq, dtype=torch.float64)
    mem = mod.precompute(keys)
    ctx, _ = mod(q, memory=mem)
    params = [keys] + list(mod.parameters())
    g = torch.autograd.grad(ctx.pow(2).sum(), params)
    ctx2, _ = mod(q, keys)
    g2 = torch.autograd.grad(ctx2.pow(2).sum(), params)
    for a, b in zip(g, g2):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("kind", ["general", "low_rank", "additive"])
def test_parametrized_and_swapped_weights(kind):
    # weight_norm moves a weight under mod.parametrizations (getattr computes it), and
    # torch.func.functional_call swaps the attributes: the op must see the weights as computed.
    from torch.nn.utils import parametrizations

    mod, Dq, Dk = _module(kind)
    q, keys = torch.randn(2, 3, Dq, dtype=torch.float64), torch.randn(2, 4, Dk, dtype=torch.float64)
    ctx0, w0 = mod(q, keys)
    names = [n for n, _ in mod.named_parameters()]
    swapped = {n: 2 * p.detach() for n, p in mod.named_parameters()}
    ctx_s, w_s = torch.func.functional_call(mod, swapped, (q, keys))
    mod2, _, _ = _module(kind)
    with torch.no_grad():
        for n, p in mod2.named_parameters():
            p.copy_(swapped[n])
    ref_s = mod2(q, keys)
    torch.testing.assert_close(ctx_s, ref_s[0])
    torch.testing.assert_close(w_s, ref_s[1])
    parametrizations.weight_norm(mod, names[0])
    ctx, w = mod(q, keys)
    torch.testing.assert_close(ctx, ctx0)
    torch.testing.assert_close(w, w0)
    ctx.sum().backward()
    g = mod.parametrizations[names[0]].original1.grad
    assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0


def test_parameters_and_repr():
    mod = fastrnn.Attention(8, 6, kind="additive", hidden_size=10)
    assert {n: tuple(p.shape) for n, p in mod.named_parameters()} == \
        {"w_query": (10, 8), "w_key": (10, 6), "v_score": (10,)}
    assert "hidden_size=10" in repr(mod)
    lr = fastrnn.Attention(8, 6, kind="low_rank")
    assert lr.rank == 3 and lr.u.shape == (3, 8) and lr.v.shape == (3, 6)
    assert fastrnn.Attention(8, 6, kind="general").weight.shape == (8, 6)
    assert len(list(fastrnn.Attention(4, 4, kind="dot").parameters())) == 0


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="kind must be one of"):
        fastrnn.Attention(4, 4, kind="cosine")
    with pytest.raises(ValueError, match="query_size == key_size"):
        fastrnn.Attention(4, 5, kind="dot")
    mod = fastrnn.Attention(4, 5, kind="general")
    with pytest.raises(ValueError, match="needs keys or memory"):
        mod(torch.randn(2, 4))
    with pytest.raises(ValueError, match="query must have shape"):
        mod(torch.randn(2, 3, 4, 1), torch.randn(2, 3, 5))
