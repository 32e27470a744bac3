"""Pieces every kernel family shares: backend objects and input validation helpers.

A backend object (see fastrnn/backends.py) has ``name``, ``check(**call) -> str | None`` and,
for kernel backends, ``fwd``/``bwd`` with the family's signature (documented in the family's
function.py). The reference backend has no fwd/bwd: the family runs naive.py under autograd.
"""
from __future__ import annotations

from typing import Callable, Iterable, Optional, Sequence

import torch

from fastrnn import _ext


class Reference:
    """Pure PyTorch (naive.py) under plain autograd: takes every call."""

    name = "reference"

    def check(self, **call) -> Optional[str]:
        return None


class Kernel:
    """A kernel backend: fwd/bwd callables plus the dtypes it takes and an optional extra check."""

    def __init__(self, name: str, fwd: Callable, bwd: Callable, dtypes: Iterable[torch.dtype],
                 extra_check: Optional[Callable[..., Optional[str]]] = None,
                 requires: Optional[str] = None):
        self.name = name
        self.requires = requires  # a function fastrnn._C must export (an older build may lack it)
        self.fwd = fwd
        self.bwd = bwd
        self.dtypes = tuple(dtypes)
        self.extra_check = extra_check

    def check(self, *, dtype: torch.dtype, **call) -> Optional[str]:
        if self.requires and not hasattr(c_ext(), self.requires):
            return f"fastrnn._C has no {self.requires} (an older build: rebuild with `make build`)"
        if dtype not in self.dtypes:
            names = ", ".join(str(d).replace("torch.", "") for d in self.dtypes)
            return f"dtype {str(dtype).replace('torch.', '')} not supported (takes {names})"
        if self.extra_check is not None:
            return self.extra_check(dtype=dtype, **call)
        return None


def needs_autograd(*tensors) -> bool:
    """Whether a call must go through its autograd Function: grad mode is on and some input
    requires grad. Otherwise the ops call the backend's fwd directly (needs_grad=False), which
    spares the Function's bookkeeping on every step of a decoding loop."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def graph_backward(reference: Callable, inputs: Sequence, needs: Sequence[bool], grad_outputs: Sequence):
    """A Function's backward when autograd asks for a graph of it (``create_graph=True``: gradient
    penalties, Hessian-vector products, ``gradgradcheck``), as torch.nn's CPU RNNs allow: the
    gradients of the family's pure-PyTorch ``reference`` re-run on the saved ``inputs``, built as
    a graph so that they can be differentiated again (through the inputs and the grad_outputs).
    The kernels' own backward builds no graph; this path costs a reference forward and backward
    and runs only when a graph is asked for. Returns one gradient or None per input."""
    wrt = [t for t, n in zip(inputs, needs) if n]
    outs = reference(*inputs)
    pairs = [(o, g) for o, g in zip(outs, grad_outputs) if o.requires_grad]
    if not pairs or not wrt:
        return [None] * len(inputs)
    got = iter(torch.autograd.grad([o for o, _ in pairs], wrt, [g for _, g in pairs], create_graph=True,
                                   allow_unused=True))
    return [next(got) if n else None for n in needs]


def c_ext():
    """The compiled extension module, or None (read from fastrnn._ext at each call, so a test
    can replace it)."""
    return _ext._C


def check_tensor(t, name: str, ndim: int, shape: Sequence[Optional[int]], ref: torch.Tensor,
                 ref_name: str = "x") -> None:
    """Raise a readable error unless ``t`` is a tensor of ``shape`` (None = any), with ``ref``'s
    dtype and device."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    got = t.shape
    ok = len(got) == ndim
    if ok:  # a plain loop: this runs for every argument of every step of a decoding loop
        for s, d in zip(shape, got):
            if s is not None and s != d:
                ok = False
                break
    if not ok:
        want = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
        raise ValueError(f"{name} must have shape {want}, got {list(got)}")
    if t.dtype != ref.dtype:
        raise TypeError(f"{name} has dtype {t.dtype} but {ref_name} has dtype {ref.dtype}")
    if t.device != ref.device:
        raise RuntimeError(f"{name} is on {t.device} but {ref_name} is on {ref.device}")


def check_lengths(lengths, T: int, B: int, device: torch.device) -> Optional[torch.Tensor]:
    """Validate per-sequence lengths; return them as int64 on ``device``, or None when every
    sequence runs the full T steps (so kernels take their unmasked path)."""
    if lengths is None:
        return None
    if not isinstance(lengths, torch.Tensor):
        lengths = torch.as_tensor(lengths)
    if lengths.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise TypeError(f"lengths must be an integer tensor, got dtype {lengths.dtype}")
    if lengths.shape != (B,):
        raise ValueError(f"lengths must have shape [{B}], got {list(lengths.shape)}")
    lo, hi = int(lengths.min()), int(lengths.max())
    if lo < 1 or hi > T:
        raise ValueError(f"lengths must lie in [1, {T}] (T = x.size(0)), got values in [{lo}, {hi}]")
    if lo == T:
        return None
    return lengths.to(device=device, dtype=torch.int64)


def reverse_padded(x: torch.Tensor, lengths: Optional[torch.Tensor]) -> torch.Tensor:
    """Reverse each sequence of x [T,B,...] within its own length (padding stays at the end)."""
    if lengths is None:
        return x.flip(0)
    T = x.shape[0]
    t = torch.arange(T, device=x.device).unsqueeze(1)              # [T,1]
    L = lengths.to(x.device).unsqueeze(0)                            # [1,B]
    idx = torch.where(t < L, L - 1 - t, t)                           # [T,B]
    idx = idx.view(T, -1, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(0, idx)


class LazyTriton:
    """The triton backend of a family, importing fastrnn/ops/<family>/triton.py on first use:
    triton is optional, and TRITON_INTERPRET must be set before its kernels are defined."""

    name = "triton"

    def __init__(self, family: str):
        self.family = family
        self._mod = None

    def _impl(self):
        if self._mod is None:
            import importlib

            self._mod = importlib.import_module(f"fastrnn.ops.{self.family}.triton")
        return self._mod

    def check(self, **call) -> Optional[str]:
        return self._impl().check(**call)

    def fwd(self, *args):
        return getattr(self._impl(), f"{self.family}_fwd")(*args)

    def bwd(self, *args):
        return getattr(self._impl(), f"{self.family}_bwd")(*args)
