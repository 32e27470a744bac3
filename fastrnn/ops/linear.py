"""``linear``: F.linear with a faster CPU path for the few rows of a decoding step.

At B=1 a decoder's linear layers (the attention's query map, the attentional layer, the output
projection over the vocabulary) are matrix-vector products bound by reading the weights. ATen's
CPU GEMV runs them on one thread well below the memory bandwidth (V=20000 x 600: 4.2 ms on the
2-core dev machine); fastrnn._C.linear_small splits the outputs over the threads and streams the
weights (1.0-1.4 ms there), up to 16 rows of input (greedy decoding, beam search's B*k rows).

On CUDA, up to 8 rows (csrc/common/small_rows.h): a warp per output with 16-byte weight loads,
where cuBLAS's GEMV at B=1 read a decoder's weights at 0.7 TB/s on an H100.

Everything else goes to F.linear: gradients needed, more rows, other dtypes, no compiled
extension, or the reference backend asked for (``backend='reference'`` or
FASTRNN_BACKEND=reference). The paths agree to rounding (the sums run in another order).
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


_CUDA_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _refusal(x: Tensor, weight: Tensor, bias: Optional[Tensor], k: Optional[int] = None) -> Optional[str]:
    """Why linear_small cannot take this call, or None. ``k``: the weight's input size when x is
    only the first part of the input (linear_cat), else x's last dimension."""
    cuda = x.device.type == "cuda"
    if x.device.type not in ("cpu", "cuda") or weight.device != x.device:
        return f"needs CPU or CUDA tensors on one device, got {x.device} and {weight.device}"
    dtypes = _CUDA_DTYPES if cuda else _DTYPES
    if x.dtype not in dtypes or weight.dtype != x.dtype or (bias is not None and bias.dtype != x.dtype):
        names = ", ".join(str(d).replace("torch.", "") for d in dtypes[:-1]) + " or " + str(dtypes[-1])[6:]
        return f"takes {names} with x, weight and bias of one dtype"
    if x.dim() < 1 or weight.dim() != 2 or (x.shape[-1] if k is None else k) != weight.shape[1] or x.shape[-1] == 0 \
            or (bias is not None and tuple(bias.shape) != (weight.shape[0],)):
        return "shapes are not x [*, K], weight [N, K], bias [N]"  # F.linear names the mismatch
    rows = x.numel() // x.shape[-1]
    if needs_autograd(x, weight, bias):
        return "computes no gradients (inference only)"
    C = c_ext()
    if C is None or not hasattr(C, "linear_small"):
        return "fastrnn._C is not built (or predates linear_small: rebuild with `make build`)"
    if cuda:
        if not hasattr(C, "linear_small_cuda_fits"):
            return "fastrnn._C was built without CUDA"
        if not C.linear_small_cuda_fits(rows, weight.shape[1], x.dtype == torch.float64):
            return f"takes 1 to {C.CUDA_SMALL_ROWS} rows, got {rows}"
    elif not 0 < rows <= SMALL_ROWS:
        return f"takes 1 to {SMALL_ROWS} rows, got {rows}"
    return None


def linear(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None, backend: Optional[str] = None) -> Tensor:
    """x [*, K] W[N, K]^T + b -> [*, N], as ``torch.nn.functional.linear`` (the same errors for
    bad arguments). ``backend``: None (the small-rows kernel where it applies, else F.linear),
    'kernel' (the small-rows kernel, CPU or CUDA, or RuntimeError saying why not; 'cpu' is its
    older name) or 'reference' (F.linear)."""
    if backend not in (None, "kernel", "cpu", "reference"):
        raise ValueError(f"backend must be 'kernel', 'reference' or None, got {backend!r}")
    if backend != "reference" and os.environ.get("FASTRNN_BACKEND") != "reference":
        why = _refusal(x, weight, bias)
        if why is None:
            K = x.shape[-1]
            y = c_ext().linear_small(x.reshape(-1, K), weight, bias)
            return y.view(*x.shape[:-1], weight.shape[0])
        if backend in ("kernel", "cpu"):
            raise RuntimeError(f"fastrnn.linear: backend {backend!r} cannot run this call: {why}")
    return F.linear(x, weight, bias)


def linear_cat(x1: Tensor, x2: Tensor, weight: Tensor, bias: Optional[Tensor] = None, tanh: bool = False,
               backend: Optional[str] = None) -> Tensor:
    """act(cat([x1, x2], -1) W^T + b) for x1 [B, K1], x2 [B, K2], act = tanh when ``tanh`` else
    none: a decoder's attentional layer tanh(W_c [ctx; h]). On CUDA with at most 8 rows and no
    gradients one kernel (the concatenation and the tanh inside it: two launches fewer per
    decoding step); otherwise torch.cat, ``linear`` and torch.tanh. ``backend`` as ``linear``."""
    if backend not in (None, "kernel", "cpu", "reference"):
        raise ValueError(f"backend must be 'kernel', 'reference' or None, got {backend!r}")
    C = c_ext()
    if (backend != "reference" and os.environ.get("FASTRNN_BACKEND") != "reference" and x1.device.type == "cuda"
            and C is not None and hasattr(C, "linear_small_cat") and x1.dim() == 2 and x2.dim() == 2
            and x2.shape[0] == x1.shape[0] and x2.dtype == x1.dtype and x2.device == x1.device
            and not needs_autograd(x2)
            and _refusal(x1, weight, bias, k=x1.shape[1] + x2.shape[1]) is None):
        return C.linear_small_cat(x1, x2, weight, bias, bool(tanh))
    y = linear(torch.cat([x1, x2], -1), weight, bias, backend=backend)
    return torch.tanh(y) if tanh else y


__all__ = ["linear", "linear_cat", "SMALL_ROWS"]
