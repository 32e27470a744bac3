"""LSTM family: ``lstm`` over a sequence and ``lstm_cell`` for one step.

    y, (hT, cT) = fastrnn.ops.lstm(x, h0, c0, w_ih, w_hh, b_ih, b_hh, backend=None,
                                    w_hr=None, lengths=None, reverse=False)
x [T,B,I], h0 [B,P], c0 [B,H], w_ih [4H,I], w_hh [4H,P], b_* [4H] or None, w_hr [P,H] or None,
lengths [B] (each in [1, T]) or None; reverse=True runs each sequence backwards within its own
length (the second direction of a bidirectional layer). Returns y [T,B,P], hT [B,P], cT [B,H].
"""
from typing import Optional

import torch

from fastrnn import backends
from fastrnn.ops._common import (LazyTriton, Kernel, Reference, c_ext, check_lengths, check_tensor, needs_autograd,
                                 reverse_padded)
from fastrnn.ops.lstm import naive
from fastrnn.ops.lstm.function import LSTMFunction


def _cpp_fwd(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths, needs_grad):
    y, hT, cT, *saved = c_ext().lstm_fwd(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths, needs_grad)
    return y, hT, cT, tuple(saved)


def _cpp_bwd(dy, dhT, dcT, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths, y, saved):
    return c_ext().lstm_bwd(dy, dhT, dcT, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths, y, list(saved))




IMPLS = {
    "cpu": Kernel("cpu", _cpp_fwd, _cpp_bwd, (torch.float32, torch.float64), requires="lstm_fwd"),
    "cuda": Kernel("cuda", _cpp_fwd, _cpp_bwd, (torch.float32, torch.float16, torch.bfloat16, torch.float64), requires="lstm_fwd"),
    "triton": LazyTriton("lstm"),
    "reference": Reference(),
}


def _validate(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr):
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
    if w_ih.shape[0] % 4:
        raise ValueError(f"w_ih must have shape [4H, {I}], got {list(w_ih.shape)}")
    H = w_ih.shape[0] // 4
    P = H
    if w_hr is not None:
        check_tensor(w_hr, "w_hr", 2, (None, H), x)
        P = w_hr.shape[0]
    check_tensor(w_hh, "w_hh", 2, (4 * H, P), x)
    check_tensor(h0, "h0", 2, (B, P), x)
    check_tensor(c0, "c0", 2, (B, H), x)
    for b, name in ((b_ih, "b_ih"), (b_hh, "b_hh")):
        if b is not None:
            check_tensor(b, name, 1, (4 * H,), x)
    return T, B, I, H, P


def lstm(x, h0, c0, w_ih, w_hh, b_ih=None, b_hh=None, backend: Optional[str] = None, *,
         w_hr=None, lengths=None, reverse: bool = False):
    T, B, I, H, P = _validate(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr)
    lengths = check_lengths(lengths, T, B, x.device)
    impl = backends.pick("lstm", IMPLS, x.device, backend, dtype=x.dtype, T=T, B=B, I=I, H=H, P=P,
                         has_proj=w_hr is not None, has_lengths=lengths is not None)
    if reverse:
        x = reverse_padded(x, lengths)
    if impl.name == "reference":
        y, (hT, cT) = naive.lstm(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths)
    else:
        args = [t.contiguous() if t is not None else None for t in (x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr)]
        if needs_autograd(*args):
            y, hT, cT = LSTMFunction.apply(impl, *args, lengths)
        else:
            y, hT, cT, _ = impl.fwd(*args, lengths, False)
    if reverse:
        y = reverse_padded(y, lengths)
    return y, (hT, cT)


def lstm_cell(x, h, c, w_ih, w_hh, b_ih=None, b_hh=None, backend: Optional[str] = None):
    """One LSTM step: x [B,I], h [B,H], c [B,H] -> (h', c')."""
    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        raise ValueError(f"x must have shape [B, I], got {list(getattr(x, 'shape', []))}")
    _, (h1, c1) = lstm(x.unsqueeze(0), h, c, w_ih, w_hh, b_ih, b_hh, backend)
    return h1, c1


__all__ = ["lstm", "lstm_cell", "LSTMFunction", "IMPLS"]
