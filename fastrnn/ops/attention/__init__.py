"""Attention family: scores, masked softmax and the weighted sum, fused.

    context, weights = fastrnn.ops.attention(query, keys, values=None, *, kind, mask=None,
        weight=None, u=None, v=None, w_query=None, w_key=None, v_score=None, key_proj=None,
        backend=None)
See naive.py for shapes and the math of each kind.
"""
from typing import Optional

import torch

from fastrnn import backends
from fastrnn.ops._common import Reference
from fastrnn.ops.attention import naive
from fastrnn.ops.attention.naive import KINDS

IMPLS = {"reference": Reference()}


def _validate(query, keys, values, kind, mask, weight, u, v, w_query, w_key, v_score, key_proj):
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    for t, name in ((query, "query"), (keys, "keys")):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 3:
            raise ValueError(f"{name} must have shape [B, T, D], got {list(t.shape)}")
    B, Tq, Dq = query.shape
    if keys.shape[0] != B:
        raise ValueError(f"keys must have batch size {B} (query's), got {list(keys.shape)}")
    Tk, Dk = keys.shape[1], keys.shape[2]
    if values is not None and (values.dim() != 3 or values.shape[:2] != (B, Tk)):
        raise ValueError(f"values must have shape [{B}, {Tk}, Dv], got {list(values.shape)}")
    if mask is not None:
        if mask.dtype != torch.bool:
            raise TypeError(f"mask must be a bool tensor (True = keep), got dtype {mask.dtype}")
        if mask.shape != (B, Tk):
            raise ValueError(f"mask must have shape [{B}, {Tk}], got {list(mask.shape)}")
    need = {"dot": (), "general": ("weight",), "low_rank": ("u", "v"),
            "additive": ("w_query", "v_score") + (() if key_proj is not None else ("w_key",))}[kind]
    given = dict(weight=weight, u=u, v=v, w_query=w_query, w_key=w_key, v_score=v_score)
    for name in need:
        if given[name] is None:
            raise ValueError(f"kind={kind!r} needs the argument {name}")
    if kind == "dot" and Dq != Dk:
        raise ValueError(f"kind='dot' needs query and keys of the same size, got {Dq} and {Dk}")
    return B, Tq, Tk, Dq, Dk


def attention(query, keys, values=None, *, kind: str, mask=None, weight=None, u=None, v=None,
              w_query=None, w_key=None, v_score=None, key_proj=None, backend: Optional[str] = None):
    B, Tq, Tk, Dq, Dk = _validate(query, keys, values, kind, mask, weight, u, v, w_query, w_key,
                                  v_score, key_proj)
    impl = backends.pick("attention", IMPLS, query.device, backend, dtype=query.dtype, kind=kind,
                         B=B, Tq=Tq, Tk=Tk, Dq=Dq, Dk=Dk)
    if impl.name == "reference":
        return naive.attention(query, keys, values, kind=kind, mask=mask, weight=weight, u=u, v=v,
                               w_query=w_query, w_key=w_key, v_score=v_score, key_proj=key_proj)
    raise AssertionError("unreachable: only the reference is registered")


__all__ = ["attention", "IMPLS", "KINDS"]
