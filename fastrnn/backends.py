"""Which backends exist here, and which one runs a given call.

Order of authority: an explicit ``backend=`` argument, then the ``FASTRNN_BACKEND`` environment
variable (a preference: if that backend cannot take the call, the default order continues),
then the default order for the tensors' device:

    CUDA tensors: cuda -> triton -> reference
    CPU tensors:  cpu -> reference          (triton too, first after cpu's turn is refused,
                                             when TRITON_INTERPRET=1 makes it run on the CPU)

A backend is an object with ``name`` and ``check(**call) -> str | None``: None means it can take
the call, a string says why not. A backend that cannot take a call is skipped; the choice is
logged once per (family, choice, reason).
"""
from __future__ import annotations

import functools
import logging
import os
from typing import Dict, Optional

import torch

from fastrnn import _ext

log = logging.getLogger("fastrnn")

NAMES = ("cuda", "triton", "cpu", "reference")


def triton_interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@functools.lru_cache(maxsize=None)
def _triton_importable() -> bool:
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:
        return False
    return True


def is_available(name: str) -> bool:
    if name == "reference":
        return True
    if name == "cpu":
        return _ext.has_ext()
    if name == "cuda":
        return _ext.built_with_cuda() and torch.cuda.is_available()
    if name == "triton":
        return _triton_importable() and (torch.cuda.is_available() or triton_interpreted())
    raise ValueError(f"unknown backend {name!r}; expected one of {NAMES}")


def available() -> list:
    """Backends usable in this process, in order of preference, e.g. ["cpu", "reference"]."""
    return [n for n in NAMES if is_available(n)]


def default_order(device: torch.device) -> tuple:
    if device.type == "cuda":
        return ("cuda", "triton", "reference")
    if triton_interpreted():
        return ("cpu", "triton", "reference")
    return ("cpu", "reference")


def _device_ok(name: str, device: torch.device) -> Optional[str]:
    if name == "cuda" and device.type != "cuda":
        return f"backend 'cuda' needs CUDA tensors, got tensors on {device}"
    if name == "cpu" and device.type != "cpu":
        return f"backend 'cpu' needs CPU tensors, got tensors on {device}"
    if name == "triton" and device.type != "cuda" and not (device.type == "cpu" and triton_interpreted()):
        return "backend 'triton' needs CUDA tensors (or TRITON_INTERPRET=1 for CPU tensors)"
    return None


def _transforms_active() -> bool:
    """Whether a torch.func transform (vmap, grad, jacrev, ...) is tracing this call: those need
    PyTorch ops they can batch and differentiate, which the kernels are not, so the call goes to
    the reference (as torch.nn's modules, which are made of such ops, work under them)."""
    return torch._C._are_functorch_transforms_active()


_logged = set()


def _log_once(family: str, name: str, why: str) -> None:
    key = (family, name, why)
    if key not in _logged:
        _logged.add(key)
        log.info("fastrnn.%s: %s", family, why if why else f"using backend {name!r}")


# Successful choices, keyed on everything the choice depends on (the backend objects themselves
# included, so replacing one in an IMPLS dict is seen): a decoding loop asks the same question
# for every token. Bounded; cleared by clear_cache() (availability changes at run time only in tests).
_cache: Dict[tuple, object] = {}
_CACHE_MAX = 4096


def clear_cache() -> None:
    _cache.clear()


def pick(family: str, impls: Dict[str, object], device: torch.device,
         backend: Optional[str] = None, **call):
    """Return the backend object that runs this call of ``family``.

    ``impls`` maps backend name -> backend object; ``call`` is passed to each candidate's
    ``check``. An explicit ``backend`` that cannot take the call raises RuntimeError naming why.
    """
    key = (family, tuple((k, id(v)) for k, v in impls.items()), device, backend,
           os.environ.get("FASTRNN_BACKEND"), triton_interpreted(), _transforms_active(),
           tuple(call.items()))  # each op passes its call arguments in one fixed order
    try:
        hit = _cache.get(key)
    except TypeError:  # an unhashable call argument: no caching
        return _pick(family, impls, device, backend, **call)
    if hit is not None:
        return hit
    impl = _pick(family, impls, device, backend, **call)
    if len(_cache) >= _CACHE_MAX:
        _cache.clear()
    _cache[key] = impl
    return impl


def _pick(family: str, impls: Dict[str, object], device: torch.device,
          backend: Optional[str] = None, **call):
    if backend is not None:
        if backend not in NAMES:
            raise ValueError(f"backend must be one of {NAMES} or None, got {backend!r}")
        reason = _refusal(backend, impls, device, call)
        if reason is not None:
            raise RuntimeError(f"fastrnn.{family}: backend {backend!r} cannot run this call: {reason}")
        _log_once(family, backend, "")
        return impls[backend]

    order = list(default_order(device))
    env = os.environ.get("FASTRNN_BACKEND")
    if env:
        if env not in NAMES:
            raise ValueError(f"FASTRNN_BACKEND must be one of {NAMES}, got {env!r}")
        order = [env] + [n for n in order if n != env]
    skipped = []
    for name in order:
        reason = _refusal(name, impls, device, call)
        if reason is None:
            _log_once(family, name, "; ".join(skipped + [f"using backend {name!r}"]) if skipped else "")
            return impls[name]
        skipped.append(f"skipped {name!r} ({reason})")
    raise RuntimeError(f"fastrnn.{family}: no backend can run this call: " + "; ".join(skipped))


def _refusal(name: str, impls, device, call) -> Optional[str]:
    if name not in impls:
        return f"backend {name!r} is not implemented for this op"
    if not is_available(name):
        return f"backend {name!r} is not available here (available: {available()})"
    reason = _device_ok(name, device)
    if reason is not None:
        return reason
    if name != "reference" and _transforms_active():
        return "torch.func transforms (vmap, grad, jacrev, ...) run on the reference backend"
    return impls[name].check(**call)
