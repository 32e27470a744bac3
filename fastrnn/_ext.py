"""Loads the compiled extension fastrnn._C, or warns once and lets the reference take over."""
import warnings

_C = None
_LOAD_ERROR = None

try:  # pragma: no cover - depends on the build
    from fastrnn import _C  # noqa: F401
except Exception as exc:  # ImportError, or an undefined symbol from a mismatched torch
    _C = None
    _LOAD_ERROR = exc
    warnings.warn(
        f"fastrnn: the compiled extension fastrnn._C could not be loaded ({exc}); "
        "falling back to the pure-PyTorch reference backend. Build it with `make build` "
        "or `pip install --no-build-isolation -e .`.",
        RuntimeWarning,
        stacklevel=2,
    )


def has_ext() -> bool:
    return _C is not None


def built_with_cuda() -> bool:
    """True when fastrnn._C was compiled and linked with its CUDA kernels."""
    return _C is not None and bool(_C.with_cuda())
