"""Pure-PyTorch attention: the ground truth for tests and the fallback when no kernel applies.

query [B,Tq,Dq], keys [B,Tk,Dk], values [B,Tk,Dv] (None = keys), mask [B,Tk] bool (True = keep).
Scores e[b,i,j] by kind (no scaling):
    dot       q . k                                  (Dq == Dk)
    general   q^T W k              weight [Dq,Dk]
    low_rank  (U q) . (V k)        u [r,Dq], v [r,Dk]
    additive  v_score . tanh(W1 k + W2 q)   w_key (W1) [H,Dk], w_query (W2) [H,Dq], v_score [H]
key_proj, when given, is the key side already mapped for the kind (general: k W^T [B,Tk,Dq];
low_rank: k V^T [B,Tk,r]; additive: k W1^T [B,Tk,H]) and replaces keys in the score: decoders
compute it once per source sentence (Attention.precompute).
Returns context [B,Tq,Dv] and weights [B,Tq,Tk]; a row whose keys are all masked gives zero
weights and zero context. This reference materializes [B,Tq,Tk,H] for "additive"; kernels don't.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

KINDS = ("dot", "general", "low_rank", "additive")


def project_keys(keys: Tensor, kind: str, weight=None, v=None, w_key=None) -> Optional[Tensor]:
    """The key-side map of each kind (None for dot)."""
    if kind == "dot":
        return None
    if kind == "general":
        return keys @ weight.t()            # (W k) for every key: [B,Tk,Dq]
    if kind == "low_rank":
        return keys @ v.t()                 # [B,Tk,r]
    if kind == "additive":
        return keys @ w_key.t()             # [B,Tk,H]
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def scores(query: Tensor, keys: Tensor, kind: str, weight=None, u=None, v=None, w_query=None,
           w_key=None, v_score=None, key_proj=None) -> Tensor:
    if kind == "dot":
        return query @ keys.transpose(1, 2)
    kp = key_proj if key_proj is not None else project_keys(keys, kind, weight, v, w_key)
    if kind == "general":
        return query @ kp.transpose(1, 2)
    if kind == "low_rank":
        return (query @ u.t()) @ kp.transpose(1, 2)
    # additive: [B,Tq,1,H] + [B,1,Tk,H]
    qp = query @ w_query.t()
    return torch.tanh(qp.unsqueeze(2) + kp.unsqueeze(1)) @ v_score


def masked_softmax(e: Tensor, mask: Optional[Tensor]) -> Tensor:
    """Softmax over the last dim, masked positions get 0; all-masked rows are all zero."""
    if mask is None:
        return torch.softmax(e, dim=-1)
    keep = mask.unsqueeze(1)                                  # [B,1,Tk]
    any_keep = keep.any(dim=-1, keepdim=True)                 # [B,1,1]
    e = e.masked_fill(~keep, float("-inf"))
    e = torch.where(any_keep, e, torch.zeros_like(e))         # avoid softmax of all -inf (NaN)
    w = torch.softmax(e, dim=-1)
    return w.masked_fill(~keep, 0.0)


def mapped_attention(qp: Tensor, kp: Tensor, values: Tensor, mask: Optional[Tensor] = None,
                     v_score: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """What the fused kernels compute from the query and keys already mapped for the kind:
    e = qp . kp (dot-like, v_score None) or v_score . tanh(qp + kp) (additive), then the masked
    softmax and the weighted sum (function.py's contract)."""
    if v_score is None:
        e = qp @ kp.transpose(1, 2)
    else:
        e = torch.tanh(qp.unsqueeze(2) + kp.unsqueeze(1)) @ v_score
    w = masked_softmax(e, mask)
    return w @ values, w


def attention(query: Tensor, keys: Tensor, values: Optional[Tensor] = None, *, kind: str,
              mask: Optional[Tensor] = None, weight=None, u=None, v=None, w_query=None, w_key=None,
              v_score=None, key_proj=None) -> Tuple[Tensor, Tensor]:
    if values is None:
        values = keys
    e = scores(query, keys, kind, weight, u, v, w_query, w_key, v_score, key_proj)
    w = masked_softmax(e, mask)
    return w @ values, w
