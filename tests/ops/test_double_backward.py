"""Double backward (create_graph=True) through the kernels' autograd Functions.

torch.nn's CPU LSTM/GRU and eager attention can be differentiated twice (gradient penalties,
Hessian-vector products). The kernel Functions do the same by returning, when autograd asks for a
graph of their backward, the pure-PyTorch reference's gradients built as a graph
(ops/_common.graph_backward); a plain backward still runs the kernel's own backward.
"""
import importlib

import pytest
import torch

import fastrnn
from fastrnn import backends
from fastrnn.ops import _common
from fastrnn.ops.attention import IMPLS as ATT_IMPLS
from fastrnn.ops.gru import IMPLS as GRU_IMPLS
from fastrnn.ops.lstm import IMPLS as LSTM_IMPLS

KERNELS = [pytest.param("cpu", id="cpu"), pytest.param("triton", id="triton"),
           pytest.param("cuda", id="cuda", marks=pytest.mark.gpu)]
FAMILIES = ["lstm", "lstm-proj", "gru", "dot", "general", "low_rank", "additive"]


def _skip_unless(backend):
    if not backends.is_available(backend):
        pytest.skip(f"backend {backend!r} not available here ({backends.available()})")


def _case(family, dtype, device="cpu", seed=0):
    """(fn(*tensors, backend) -> tuple of outputs, tensors): a small awkward call of one family,
    ragged lengths or a mask with a fully masked row included."""
    g = torch.Generator().manual_seed(seed)

    def r(*s, scale=0.5):
        return (scale * torch.randn(*s, generator=g, dtype=torch.float64)).to(device=device, dtype=dtype)

    T, B, I, H = 4, 3, 3, 5
    lengths = torch.tensor([4, 2, 3])
    if family.startswith("lstm"):
        P = 2 if family == "lstm-proj" else H
        ts = [r(T, B, I, scale=1.0), r(B, P), r(B, H), r(4 * H, I), r(4 * H, P), r(4 * H), r(4 * H)]
        if P != H:
            ts.append(r(P, H))

        def fn(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr=None, backend=None):
            y, (hT, cT) = fastrnn.ops.lstm(x, h0, c0, w_ih, w_hh, b_ih, b_hh, backend, w_hr=w_hr,
                                           lengths=lengths, reverse=True)
            return y, hT, cT
        return fn, ts
    if family == "gru":
        ts = [r(T, B, I, scale=1.0), r(B, H), r(3 * H, I), r(3 * H, H), r(3 * H), r(3 * H)]

        def fn(x, h0, w_ih, w_hh, b_ih, b_hh, backend=None):
            return fastrnn.ops.gru(x, h0, w_ih, w_hh, b_ih, b_hh, backend, lengths=lengths)
        return fn, ts
    Tq, Tk, D, Dv = 2, 5, 4, 3
    mask = (torch.arange(Tk).unsqueeze(0) < torch.tensor([5, 0, 3]).unsqueeze(1)).to(device)
    ts = [r(B, Tq, D, scale=1.0), r(B, Tk, D, scale=1.0), r(B, Tk, Dv, scale=1.0)]
    names = {"dot": [], "general": ["weight"], "low_rank": ["u", "v"],
             "additive": ["w_query", "w_key", "v_score"]}[family]
    shapes = {"weight": (D, D), "u": (H, D), "v": (H, D), "w_query": (H, D), "w_key": (H, D), "v_score": (H,)}
    ts += [r(*shapes[n]) for n in names]

    def fn(q, k, v, *ws, backend=None):
        return fastrnn.ops.attention(q, k, v, kind=family, mask=mask, backend=backend, **dict(zip(names, ws)))
    return fn, ts


def _penalty_grads(fn, ts, backend):
    """First-order grads of a loss with create_graph=True, then the grads of their squared norm
    (a gradient penalty) against every input."""
    ts = [t.detach().clone().requires_grad_() for t in ts]
    outs = fn(*ts, backend=backend)
    loss = sum((o * torch.linspace(-1, 1, o.numel(), dtype=o.dtype, device=o.device).view_as(o)).sum()
               + (o ** 2).sum() for o in outs)
    g1 = torch.autograd.grad(loss, ts, create_graph=True)
    g2 = torch.autograd.grad(sum((g ** 2).sum() for g in g1), ts)
    return [g.detach() for g in g1], list(g2)


@pytest.mark.skipif("cpu" not in backends.available(), reason="fastrnn._C not built")
@pytest.mark.parametrize("family", FAMILIES)
def test_gradgradcheck_cpu_fp64(family):
    fn, ts = _case(family, torch.float64)
    ts = [t.requires_grad_() for t in ts]
    assert torch.autograd.gradgradcheck(lambda *a: fn(*a, backend="cpu"), ts, eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", KERNELS)
@pytest.mark.parametrize("family", FAMILIES)
def test_gradient_penalty_matches_the_reference(backend, family):
    _skip_unless(backend)
    dtype = torch.float64 if backend == "cpu" else torch.float32
    device = "cuda" if backend == "cuda" else "cpu"
    fn, ts = _case(family, dtype, device, seed=1)
    if backend == "triton" and family == "lstm-proj":
        pytest.skip("the Triton LSTM takes no proj_size")
    g1, g2 = _penalty_grads(fn, ts, backend)
    r1, r2 = _penalty_grads(fn, [t.double() for t in ts], "reference")
    tol = dict(rtol=1e-9, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-3, atol=1e-4)
    for a, b in zip(g1 + g2, r1 + r2):
        torch.testing.assert_close(a.double(), b, **tol)
    # the first-order grads of the graph path are the kernel's own, to rounding
    ts2 = [t.detach().clone().requires_grad_() for t in ts]
    outs = fn(*ts2, backend=backend)
    loss = sum((o * torch.linspace(-1, 1, o.numel(), dtype=o.dtype, device=o.device).view_as(o)).sum()
               + (o ** 2).sum() for o in outs)
    for a, b in zip(g1, torch.autograd.grad(loss, ts2)):
        torch.testing.assert_close(a, b, **tol)


@pytest.mark.skipif("cpu" not in backends.available(), reason="fastrnn._C not built")
@pytest.mark.parametrize("family", ["lstm", "gru", "additive"])
def test_plain_backward_runs_the_kernel_and_create_graph_the_reference(family, monkeypatch):
    impls = {"lstm": LSTM_IMPLS, "gru": GRU_IMPLS, "additive": ATT_IMPLS}[family]
    calls = {"kernel": 0, "graph": 0}
    kernel_bwd, graph = impls["cpu"].bwd, _common.graph_backward

    def counting_bwd(*a):
        calls["kernel"] += 1
        return kernel_bwd(*a)

    def counting_graph(*a):
        calls["graph"] += 1
        return graph(*a)

    monkeypatch.setattr(impls["cpu"], "bwd", counting_bwd)
    module = {"lstm": "fastrnn.ops.lstm.function", "gru": "fastrnn.ops.gru.function",
              "additive": "fastrnn.ops.attention.function"}[family]
    monkeypatch.setattr(importlib.import_module(module), "graph_backward", counting_graph)
    fn, ts = _case(family, torch.float64)
    ts = [t.requires_grad_() for t in ts]
    torch.autograd.grad(fn(*ts, backend="cpu")[0].sum(), ts)
    assert calls == {"kernel": 1, "graph": 0}
    torch.autograd.grad(fn(*ts, backend="cpu")[0].sum(), ts, create_graph=True)
    assert calls == {"kernel": 1, "graph": 1}
