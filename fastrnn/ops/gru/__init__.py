"""GRU family: ``gru`` over a sequence and ``gru_cell`` for one step.

    y, hT = fastrnn.ops.gru(x, h0, w_ih, w_hh, b_ih, b_hh, backend=None, lengths=None, reverse=False)
x [T,B,I], h0 [B,H], w_ih [3H,I], w_hh [3H,H], b_* [3H] or None, lengths [B] (each in [1, T]) or
None; reverse=True runs each sequence backwards within its own length. Returns y [T,B,H], hT [B,H].
"""
from typing import Optional

import torch

from fastrnn import backends
from fastrnn.ops._common import (LazyTriton, Kernel, Reference, c_ext, check_lengths, check_tensor, needs_autograd,
                                 reverse_padded)
from fastrnn.ops.gru import naive
from fastrnn.ops.gru.function import GRUFunction


def _cpp_fwd(x, h0, w_ih, w_hh, b_ih, b_hh, lengths, needs_grad):
    y, hT, *saved = c_ext().gru_fwd(x, h0, w_ih, w_hh, b_ih, b_hh, lengths, needs_grad)
    return y, hT, tuple(saved)


def _cpp_bwd(dy, dhT, x, h0, w_ih, w_hh, b_ih, b_hh, lengths, y, saved):
    return c_ext().gru_bwd(dy, dhT, x, h0, w_ih, w_hh, b_ih, b_hh, lengths, y, list(saved))




IMPLS = {
    "cpu": Kernel("cpu", _cpp_fwd, _cpp_bwd, (torch.float32, torch.float64), requires="gru_fwd"),
    "cuda": Kernel("cuda", _cpp_fwd, _cpp_bwd, (torch.float32, torch.float16, torch.bfloat16, torch.float64), requires="gru_fwd"),
    "triton": LazyTriton("gru"),
    "reference": Reference(),
}


def _validate(x, h0, w_ih, w_hh, b_ih, b_hh):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 3:
        raise ValueError(f"x must have shape [T, B, I], got {list(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}")
    T, B, I = x.shape
    if T == 0 or B == 0:
        raise ValueError(f"x must have T > 0 and B > 0, got shape {list(x.shape)}")
    check_tensor(w_ih, "w_ih", 2, (None, I), x)
    if w_ih.shape[0] % 3:
        raise ValueError(f"w_ih must have shape [3H, {I}], got {list(w_ih.shape)}")
    H = w_ih.shape[0] // 3
    check_tensor(w_hh, "w_hh", 2, (3 * H, H), x)
    check_tensor(h0, "h0", 2, (B, H), x)
    for b, name in ((b_ih, "b_ih"), (b_hh, "b_hh")):
        if b is not None:
            check_tensor(b, name, 1, (3 * H,), x)
    return T, B, I, H


def gru(x, h0, w_ih, w_hh, b_ih=None, b_hh=None, backend: Optional[str] = None, *,
        lengths=None, reverse: bool = False):
    T, B, I, H = _validate(x, h0, w_ih, w_hh, b_ih, b_hh)
    lengths = check_lengths(lengths, T, B, x.device)
    impl = backends.pick("gru", IMPLS, x.device, backend, dtype=x.dtype, T=T, B=B, I=I, H=H,
                         has_lengths=lengths is not None)
    if reverse:
        x = reverse_padded(x, lengths)
    if impl.name == "reference":
        y, hT = naive.gru(x, h0, w_ih, w_hh, b_ih, b_hh, lengths)
    else:
        args = [t.contiguous() if t is not None else None for t in (x, h0, w_ih, w_hh, b_ih, b_hh)]
        if needs_autograd(*args):
            y, hT = GRUFunction.apply(impl, *args, lengths)
        else:
            y, hT, _ = impl.fwd(*args, lengths, False)
    if reverse:
        y = reverse_padded(y, lengths)
    return y, hT


def gru_cell(x, h, w_ih, w_hh, b_ih=None, b_hh=None, backend: Optional[str] = None):
    """One GRU step: x [B,I], h [B,H] -> h'."""
    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        raise ValueError(f"x must have shape [B, I], got {list(getattr(x, 'shape', []))}")
    _, h1 = gru(x.unsqueeze(0), h, w_ih, w_hh, b_ih, b_hh, backend)
    return h1


__all__ = ["gru", "gru_cell", "GRUFunction", "IMPLS"]
