"""``fastrnn.Attention``: owns the weights of one attention kind and calls fastrnn.ops.attention."""
import math
from typing import NamedTuple, Optional

import torch
from torch import nn

from fastrnn.ops.attention import KINDS, attention
from fastrnn.ops.attention.naive import project_keys


class AttentionMemory(NamedTuple):
    """What a decoder keeps per source sentence: keys, values, mask and the projected keys."""
    keys: torch.Tensor
    values: Optional[torch.Tensor]
    mask: Optional[torch.Tensor]
    key_proj: Optional[torch.Tensor]


class Attention(nn.Module):
    """Attention of one kind ("dot", "general", "low_rank", "additive").

    query_size Dq, key_size Dk; hidden_size H for "additive" (default Dq); rank r for "low_rank"
    (default min(Dq, Dk) // 2). forward(query [B,Dq] or [B,Tq,Dq], keys [B,Tk,Dk], values=None,
    mask=None, memory=None) -> (context, weights), with Tq dropped when query was 2-D.
    """

    def __init__(self, query_size: int, key_size: int, kind: str = "additive",
                 hidden_size: Optional[int] = None, rank: Optional[int] = None,
                 backend: Optional[str] = None, device=None, dtype=None):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if kind == "dot" and query_size != key_size:
            raise ValueError(f"kind='dot' needs query_size == key_size, got {query_size} and {key_size}")
        fk = {"device": device, "dtype": dtype}
        self.query_size, self.key_size, self.kind, self.backend = query_size, key_size, kind, backend
        self.hidden_size = self.rank = None
        if kind == "general":
            self.weight = nn.Parameter(torch.empty(query_size, key_size, **fk))
        elif kind == "low_rank":
            self.rank = rank or max(1, min(query_size, key_size) // 2)
            self.u = nn.Parameter(torch.empty(self.rank, query_size, **fk))
            self.v = nn.Parameter(torch.empty(self.rank, key_size, **fk))
        elif kind == "additive":
            self.hidden_size = hidden_size or query_size
            self.w_query = nn.Parameter(torch.empty(self.hidden_size, query_size, **fk))
            self.w_key = nn.Parameter(torch.empty(self.hidden_size, key_size, **fk))
            self.v_score = nn.Parameter(torch.empty(self.hidden_size, **fk))
        self._weight_names = tuple(n for n, _ in self.named_parameters(recurse=False))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for p in self.parameters():
            bound = 1.0 / math.sqrt(p.shape[-1])
            nn.init.uniform_(p, -bound, bound)

    def _weights(self):
        # getattr, not named_parameters: a parametrized weight (weight_norm, spectral_norm, ...)
        # lives under self.parametrizations and is computed by getattr, and torch.func's
        # functional_call swaps the attributes; the names are fixed by the kind
        names = self.__dict__.get("_weight_names")
        if names is None:  # a module pickled before the names were kept
            names = self._weight_names = tuple(n for n, _ in self.named_parameters(recurse=False))
        return {n: getattr(self, n) for n in names}

    def precompute(self, keys, values=None, mask=None) -> AttentionMemory:
        """Map the keys once per source sentence; pass the result as ``memory=`` at each step.

        The key-side GEMM (general: k W^T, low_rank: k V^T, additive: k W1^T) then costs once per
        sentence instead of once per decoder step; gradients still reach keys and the weights.
        """
        if not isinstance(keys, torch.Tensor) or keys.dim() != 3 or keys.shape[-1] != self.key_size:
            shape = list(keys.shape) if isinstance(keys, torch.Tensor) else type(keys).__name__
            raise ValueError(f"keys must have shape [B, Tk, {self.key_size}], got {shape}")
        p = self._weights()
        kp = project_keys(keys, self.kind, p.get("weight"), p.get("v"), p.get("w_key"))
        return AttentionMemory(keys, values, mask, kp)

    def forward(self, query, keys=None, values=None, mask=None, memory: Optional[AttentionMemory] = None):
        if memory is not None:
            keys, values, mask, key_proj = memory
        else:
            key_proj = None
        if keys is None:
            raise ValueError("Attention.forward needs keys or memory=precompute(keys)")
        if not isinstance(query, torch.Tensor) or query.dim() not in (2, 3):
            shape = list(query.shape) if isinstance(query, torch.Tensor) else type(query).__name__
            raise ValueError(f"query must have shape [B, {self.query_size}] or "
                             f"[B, Tq, {self.query_size}], got {shape}")
        one_step = query.dim() == 2
        q = query.unsqueeze(1) if one_step else query
        ctx, w = attention(q, keys, values, kind=self.kind, mask=mask, key_proj=key_proj,
                           backend=self.backend, **self._weights())
        if one_step:
            return ctx.squeeze(1), w.squeeze(1)
        return ctx, w

    def extra_repr(self) -> str:
        s = f"{self.query_size}, {self.key_size}, kind={self.kind!r}"
        if self.hidden_size:
            s += f", hidden_size={self.hidden_size}"
        if self.rank:
            s += f", rank={self.rank}"
        return s
