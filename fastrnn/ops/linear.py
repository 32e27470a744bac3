"""``linear``: F.linear with a faster CPU path for the few rows of a decoding step.

At B=1 a decoder's linear layers (the attention's query map, the attentional layer, the output
projection over the vocabulary) are matrix-vector products bound by reading the weights. ATen's
CPU GEMV runs them on one thread well below the memory bandwidth (V=20000 x 600: 4.2 ms on the
2-core dev machine); fastrnn._C.linear_small splits the outputs over the threads and streams the
weights (1.0-1.4 ms there), up to 16 rows of input (greedy decoding, beam search's B*k rows).

Everything else goes to F.linear: gradients needed, more rows, CUDA tensors, other dtypes, no
compiled extension, or the reference backend asked for (``backend='reference'`` or
FASTRNN_BACKEND=reference). The two paths agree to rounding (the sums run in another order).
"""
from __future__ import annotations

import os
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from fastrnn.ops._common import c_ext, needs_autograd

# Up to this many rows (the product of x's leading dimensions) the CPU path is taken; measured
# faster than F.linear at every size tried up to 16 rows (K 600-1200, N 600-20000, 1-2 threads).
# The bound is the kernels' (csrc/common/cpu_kernels.h kSmallRows, exported by fastrnn._C).
SMALL_ROWS = int(getattr(c_ext(), "SMALL_ROWS", 16))
_DTYPES = (torch.float32, torch.float64)


def _refusal(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Optional[str]:
    """Why linear_small cannot take this call, or None."""
    if x.device.type != "cpu" or weight.device.type != "cpu":
        return f"needs CPU tensors, got {x.device}"
    if x.dtype not in _DTYPES or weight.dtype != x.dtype or (bias is not None and bias.dtype != x.dtype):
        return "takes float32 or float64 with x, weight and bias of one dtype"
    if x.dim() < 1 or weight.dim() != 2 or x.shape[-1] != weight.shape[1] or x.shape[-1] == 0 \
            or (bias is not None and tuple(bias.shape) != (weight.shape[0],)):
        return "shapes are not x [*, K], weight [N, K], bias [N]"  # F.linear names the mismatch
    rows = x.numel() // x.shape[-1]
    if not 0 < rows <= SMALL_ROWS:
        return f"takes 1 to {SMALL_ROWS} rows, got {rows}"
    if needs_autograd(x, weight, bias):
        return "computes no gradients (inference only)"
    C = c_ext()
    if C is None or not hasattr(C, "linear_small"):
        return "fastrnn._C is not built (or predates linear_small: rebuild with `make build`)"
    return None


def linear(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None, backend: Optional[str] = None) -> Tensor:
    """x [*, K] W[N, K]^T + b -> [*, N], as ``torch.nn.functional.linear`` (the same errors for
    bad arguments). ``backend``: None (the CPU kernel where it applies, else F.linear), 'cpu'
    (the kernel, or RuntimeError saying why not) or 'reference' (F.linear)."""
    if backend not in (None, "cpu", "reference"):
        raise ValueError(f"backend must be 'cpu', 'reference' or None, got {backend!r}")
    if backend != "reference" and os.environ.get("FASTRNN_BACKEND") != "reference":
        why = _refusal(x, weight, bias)
        if why is None:
            K = x.shape[-1]
            y = c_ext().linear_small(x.reshape(-1, K), weight, bias)
            return y.view(*x.shape[:-1], weight.shape[0])
        if backend == "cpu":
            raise RuntimeError(f"fastrnn.linear: backend 'cpu' cannot run this call: {why}")
    return F.linear(x, weight, bias)


__all__ = ["linear", "SMALL_ROWS"]
