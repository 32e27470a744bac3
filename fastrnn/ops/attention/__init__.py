"""Attention family: scores, masked softmax and the weighted sum, fused.

    context, weights = fastrnn.ops.attention(query, keys, values=None, *, kind, mask=None,
        weight=None, u=None, v=None, w_query=None, w_key=None, v_score=None, key_proj=None,
        backend=None)
See naive.py for shapes and the math of each kind.

Kernel backends split each kind into GEMMs done here with torch (autograd takes their
gradients) and one fused kernel (function.py) on the mapped query qp and keys kp:
    dot       qp = q,          kp = k
    general   qp = q W (Tq <= Tk, k unmapped)  or  qp = q, kp = k W^T (key_proj, or Tq > Tk)
    low_rank  qp = q U^T,      kp = k V^T (or key_proj)
    additive  qp = q W2^T,     kp = k W1^T (or key_proj), e = v_score . tanh(qp_i + kp_j)
"""
from typing import Optional

import torch

from fastrnn import backends
from fastrnn.ops._common import LazyTriton, Kernel, Reference, c_ext, check_tensor, needs_autograd
from fastrnn.ops.attention import naive
from fastrnn.ops.attention.function import AttentionFunction
from fastrnn.ops.attention.naive import KINDS
from fastrnn.ops.linear import linear


def _cpp_fwd(qp, kp, v, mask, v_score, needs_grad):
    ctx, weights, *saved = c_ext().attention_fwd(qp, kp, v, mask, v_score, needs_grad)
    return ctx, weights, tuple(saved)


def _cpp_bwd(dctx, dweights, qp, kp, v, mask, v_score, weights, saved):
    dqp, dkp, dv, dvs = c_ext().attention_bwd(dctx, dweights, qp, kp, v, mask, v_score, weights,
                                              list(saved))
    return dqp, dkp, dv, (dvs if v_score is not None else None)


def _nonempty(B, Tq, Tk, D, Dv, **_):
    if min(B, Tq, Tk, D, Dv) == 0:
        return f"empty sizes (B={B}, Tq={Tq}, Tk={Tk}, D={D}, Dv={Dv})"
    return None


def _cuda_check(dtype, B, Tq, Tk, D, Dv, **call):
    why = _nonempty(B, Tq, Tk, D, Dv)
    if why:
        return why
    acc = 8 if dtype == torch.float64 else 4
    if (D + Dv + Tk) * acc > 48 * 1024:
        return f"D + Dv + Tk = {D + Dv + Tk} needs more than 48 KiB of shared memory per row"
    return None




IMPLS = {
    "cpu": Kernel("cpu", _cpp_fwd, _cpp_bwd, (torch.float32, torch.float64),
                  lambda dtype, **call: _nonempty(**call), requires="attention_fwd"),
    "cuda": Kernel("cuda", _cpp_fwd, _cpp_bwd,
                   (torch.float32, torch.float16, torch.bfloat16, torch.float64), _cuda_check, requires="attention_fwd"),
    "triton": LazyTriton("attention"),
    "reference": Reference(),
}


def _validate(query, keys, values, kind, mask, weight, u, v, w_query, w_key, v_score, key_proj):
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    for t, name in ((query, "query"), (keys, "keys")):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 3:
            raise ValueError(f"{name} must have shape [B, T, D], got {list(t.shape)}")
    if not query.is_floating_point():
        raise TypeError(f"query must be a floating-point tensor, got dtype {query.dtype}")
    B, Tq, Dq = query.shape
    if keys.shape[0] != B:
        raise ValueError(f"keys must have batch size {B} (query's), got {list(keys.shape)}")
    Tk, Dk = keys.shape[1], keys.shape[2]
    check_tensor(keys, "keys", 3, (B, None, None), query, "query")
    if values is not None:
        if not isinstance(values, torch.Tensor):
            raise TypeError(f"values must be a torch.Tensor, got {type(values).__name__}")
        if values.dim() != 3 or values.shape[:2] != (B, Tk):
            raise ValueError(f"values must have shape [{B}, {Tk}, Dv], got {list(values.shape)}")
        check_tensor(values, "values", 3, (B, Tk, None), query, "query")
    if mask is not None:
        if not isinstance(mask, torch.Tensor):
            raise TypeError(f"mask must be a bool torch.Tensor, got {type(mask).__name__}")
        if mask.dtype != torch.bool:
            raise TypeError(f"mask must be a bool tensor (True = keep), got dtype {mask.dtype}")
        if mask.shape != (B, Tk):
            raise ValueError(f"mask must have shape [{B}, {Tk}], got {list(mask.shape)}")
        if mask.device != query.device:
            raise RuntimeError(f"mask is on {mask.device} but query is on {query.device}")
    # With key_proj the key-side map (general weight, low_rank v, additive w_key) is not needed.
    kp_side = () if key_proj is not None else {"general": ("weight",), "low_rank": ("v",),
                                               "additive": ("w_key",)}.get(kind, ())
    need = {"dot": (), "general": (), "low_rank": ("u",), "additive": ("w_query", "v_score")}[kind]
    need = need + kp_side
    given = dict(weight=weight, u=u, v=v, w_query=w_query, w_key=w_key, v_score=v_score)
    for name in need:
        if given[name] is None:
            raise ValueError(f"kind={kind!r} needs the argument {name}")
    if kind == "dot" and Dq != Dk:
        raise ValueError(f"kind='dot' needs query and keys of the same size, got {Dq} and {Dk}")
    # Shapes of the weights and of key_proj (the key side already mapped for the kind).
    D = Dq
    if kind == "general":
        if weight is not None:
            check_tensor(weight, "weight", 2, (Dq, Dk), query, "query")
        D = max(Dq, Dk)  # the kernel's D is Dq or Dk, whichever side is mapped
    elif kind == "low_rank":
        check_tensor(u, "u", 2, (None, Dq), query, "query")
        D = u.shape[0]
        if v is not None:
            check_tensor(v, "v", 2, (D, Dk), query, "query")
    elif kind == "additive":
        check_tensor(w_query, "w_query", 2, (None, Dq), query, "query")
        D = w_query.shape[0]
        if w_key is not None:
            check_tensor(w_key, "w_key", 2, (D, Dk), query, "query")
        check_tensor(v_score, "v_score", 1, (D,), query, "query")
    if key_proj is not None:
        if kind == "dot":
            raise ValueError("kind='dot' takes no key_proj (its keys are not mapped)")
        check_tensor(key_proj, "key_proj", 3, (B, Tk, Dq if kind == "general" else D), query,
                     "query")
    return B, Tq, Tk, Dq, Dk, D


def _mapped(query, keys, kind, weight, u, v, w_query, w_key, key_proj):
    """(qp, kp) for the fused kernel: the kind's linear maps as torch GEMMs."""
    if kind == "dot":
        return query, keys
    if kind == "general":
        if key_proj is not None:
            return query, key_proj
        if query.shape[1] <= keys.shape[1]:
            return query @ weight, keys           # map the shorter side: q^T W k = (q W) . k
        return query, keys @ weight.t()
    if kind == "low_rank":
        kp = key_proj if key_proj is not None else keys @ v.t()
        return linear(query, u), kp
    kp = key_proj if key_proj is not None else keys @ w_key.t()
    return linear(query, w_query), kp


def attention(query, keys, values=None, *, kind: str, mask=None, weight=None, u=None, v=None,
              w_query=None, w_key=None, v_score=None, key_proj=None, backend: Optional[str] = None):
    B, Tq, Tk, Dq, Dk, D = _validate(query, keys, values, kind, mask, weight, u, v, w_query,
                                     w_key, v_score, key_proj)
    vals = keys if values is None else values
    Dv = vals.shape[2]
    impl = backends.pick("attention", IMPLS, query.device, backend, dtype=query.dtype, kind=kind,
                         B=B, Tq=Tq, Tk=Tk, Dq=Dq, Dk=Dk, D=D, Dv=Dv)
    if impl.name == "reference":
        return naive.attention(query, keys, values, kind=kind, mask=mask, weight=weight, u=u, v=v,
                               w_query=w_query, w_key=w_key, v_score=v_score, key_proj=key_proj)
    qp, kp = _mapped(query, keys, kind, weight, u, v, w_query, w_key, key_proj)
    vs = v_score.contiguous() if kind == "additive" else None
    m = mask.contiguous() if mask is not None else None
    args = (qp.contiguous(), kp.contiguous(), vals.contiguous(), m, vs)
    if needs_autograd(*args):
        return AttentionFunction.apply(impl, *args)
    out, weights, _ = impl.fwd(*args, False)
    return out, weights


__all__ = ["attention", "AttentionFunction", "IMPLS", "KINDS"]
