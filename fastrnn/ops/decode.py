"""``greedy_update``: one greedy-decoding step's bookkeeping, in place, as one kernel.

After the decoder's step, greedy decoding picks each row's most probable token outside padding,
adds its log-probability to the row's score, writes it (or padding, once the row has ended) into
the output, and updates the row's length, liveness and next input. Written with ATen ops that is
about twenty small kernels a step (``reference`` below); on a GPU their launches and gaps cost more
than the decoder's matrix-vector products at B=1. ``fastrnn._C.greedy_update`` does it in one
kernel per step (csrc/decode: a CUDA kernel and a C++ CPU kernel), one pass over each row's logits.

The buffers are greedy_decode's (fastrnn/nn/decoding.py); ``t`` is a device tensor so that the
step can be captured in a CUDA graph. The kernel writes t + 1 into ``t_next`` when given (greedy
decoding alternates two step buffers), else the caller advances ``t``.
"""
from __future__ import annotations

import os
from typing import Optional

import torch
from torch import Tensor

from fastrnn.ops._common import c_ext


def reference(logits: Tensor, weights: Optional[Tensor], t: Tensor, pad: int, eos: int, maxlen: Tensor,
              alive: Tensor, tokens: Tensor, scores: Tensor, out_len: Tensor, prev: Tensor,
              attn: Optional[Tensor], t_next: Optional[Tensor] = None) -> None:
    """The step in ATen ops (the kernels' specification; also the path for what they refuse)."""
    logp = torch.log_softmax(logits.float(), -1)
    logp[:, pad] = float("-inf")                              # padding is never an output
    best, tok = logp.max(-1)
    scores += best.masked_fill(~alive, 0.0)
    emit = alive & (tok != eos)
    B, L = tokens.shape
    col = t.expand(B).unsqueeze(1)                            # [B,1]: this step's column
    inside = bool(t.item() < L) if logits.device.type == "cpu" else True
    if inside:
        tokens.scatter_(1, col, tok.masked_fill(~emit, pad).unsqueeze(1))
        if attn is not None:
            S = attn.shape[2]
            attn.scatter_(1, col.unsqueeze(2).expand(B, 1, S),
                          weights.masked_fill(~emit.unsqueeze(1), 0.0).unsqueeze(1).to(attn.dtype))
    out_len += emit
    alive.copy_(emit & (t + 1 < maxlen))
    prev.copy_(tok)
    if t_next is not None:
        t_next.copy_(t + 1)


_KERNEL_DTYPES = {"cpu": (torch.float32, torch.float64),
                  "cuda": (torch.float32, torch.float64, torch.float16, torch.bfloat16)}


def _refusal(logits: Tensor, weights: Optional[Tensor], attn: Optional[Tensor]) -> Optional[str]:
    """Why the kernel cannot take this call, or None."""
    C = c_ext()
    if C is None or not hasattr(C, "greedy_update"):
        return "fastrnn._C is not built (or predates greedy_update: rebuild with `make build`)"
    dev = logits.device.type
    if dev == "cuda" and not C.with_cuda():
        return "fastrnn._C was built without CUDA"
    if logits.dtype not in _KERNEL_DTYPES.get(dev, ()):
        return f"takes {dev} logits of dtype {', '.join(str(d) for d in _KERNEL_DTYPES.get(dev, ()))}"
    if attn is not None and (weights is None or weights.dtype != attn.dtype):
        return "needs the attention weights in attn's dtype"
    return None


def greedy_update(logits: Tensor, weights: Optional[Tensor], t: Tensor, pad: int, eos: int, maxlen: Tensor,
                  alive: Tensor, tokens: Tensor, scores: Tensor, out_len: Tensor, prev: Tensor,
                  attn: Optional[Tensor] = None, t_next: Optional[Tensor] = None,
                  backend: Optional[str] = None) -> None:
    """One greedy step's bookkeeping in place (see the module's docstring and csrc/decode/decode.h):
    logits [B,V], weights [B,S] (or None), t [1] long, maxlen [B] long, alive [B] bool, tokens [B,L]
    long, scores [B] float32, out_len [B] long, prev [B] long, attn [B,L,S] (or None), t_next [1]
    long (or None): receives t + 1, so that two buffers can take turns as the step index.
    ``backend``: None (the kernel where it applies), 'kernel' (RuntimeError saying why not) or
    'reference'; FASTRNN_BACKEND=reference forces the reference too."""
    if backend not in (None, "kernel", "reference"):
        raise ValueError(f"backend must be 'kernel', 'reference' or None, got {backend!r}")
    if backend != "reference" and os.environ.get("FASTRNN_BACKEND") != "reference":
        why = _refusal(logits, weights, attn)
        if why is None:
            c_ext().greedy_update(logits.contiguous(), None if attn is None else weights.contiguous(), t, t_next,
                                  pad, eos, maxlen, alive, tokens, scores, out_len, prev, attn)
            return
        if backend == "kernel":
            raise RuntimeError(f"fastrnn.greedy_update: the kernel cannot run this call: {why}")
    reference(logits, weights, t, pad, eos, maxlen, alive, tokens, scores, out_len, prev, attn, t_next)


__all__ = ["greedy_update", "reference"]
