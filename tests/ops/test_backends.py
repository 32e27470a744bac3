"""fastrnn.backends: what exists here, and who runs a call (explicit > FASTRNN_BACKEND > default,
refusals fall through to the next backend, an explicit backend that refuses raises)."""
import importlib

import pytest
import torch

import fastrnn
from fastrnn import _ext, backends
lstm_ops = importlib.import_module("fastrnn.ops.lstm")  # the package (fastrnn.ops.lstm is also the function)

CPU = torch.device("cpu")


class Fake:
    """A backend that records being picked and refuses when given a reason."""

    def __init__(self, name, refuse=None):
        self.name = name
        self.refuse = refuse

    def check(self, **call):
        return self.refuse


def fakes(**refusals):
    return {n: Fake(n, refusals.get(n)) for n in ("cpu", "triton", "reference")}


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    monkeypatch.delenv("FASTRNN_BACKEND", raising=False)


def test_available_lists_known_backends_in_order():
    av = backends.available()
    assert av[-1] == "reference"
    assert all(n in backends.NAMES for n in av)
    assert av == sorted(av, key=backends.NAMES.index)
    assert ("cpu" in av) == _ext.has_ext()
    assert "cuda" not in av or torch.cuda.is_available()


def test_unknown_backend_name_raises_value_error():
    with pytest.raises(ValueError, match="nope"):
        backends.is_available("nope")
    with pytest.raises(ValueError, match="backend"):
        backends.pick("lstm", fakes(), CPU, backend="nope")


def test_unknown_env_backend_raises_value_error(monkeypatch):
    monkeypatch.setenv("FASTRNN_BACKEND", "nope")
    with pytest.raises(ValueError, match="FASTRNN_BACKEND"):
        backends.pick("lstm", fakes(), CPU)


def test_default_order_on_cpu():
    first = "cpu" if _ext.has_ext() else ("triton" if backends.triton_interpreted() else "reference")
    assert backends.pick("lstm", fakes(), CPU).name == first


def test_env_beats_default(monkeypatch):
    monkeypatch.setenv("FASTRNN_BACKEND", "reference")
    assert backends.pick("lstm", fakes(), CPU).name == "reference"


@pytest.mark.skipif(not _ext.has_ext(), reason="fastrnn._C not built")
def test_explicit_beats_env(monkeypatch):
    monkeypatch.setenv("FASTRNN_BACKEND", "reference")
    assert backends.pick("lstm", fakes(), CPU, backend="cpu").name == "cpu"


@pytest.mark.skipif(not _ext.has_ext(), reason="fastrnn._C not built")
def test_env_is_a_preference_when_it_refuses(monkeypatch):
    monkeypatch.setenv("FASTRNN_BACKEND", "cpu")
    assert backends.pick("lstm", fakes(cpu="too big", triton="no"), CPU).name == "reference"


@pytest.mark.skipif(not _ext.has_ext(), reason="fastrnn._C not built")
def test_explicit_backend_that_refuses_raises_with_reason():
    with pytest.raises(RuntimeError, match="too big"):
        backends.pick("lstm", fakes(cpu="too big"), CPU, backend="cpu")


def test_explicit_backend_missing_for_op_raises():
    impls = {"reference": Fake("reference")}
    with pytest.raises(RuntimeError, match="not implemented"):
        backends.pick("lstm", impls, CPU, backend="triton")


def test_explicit_cuda_on_cpu_tensors_raises():
    with pytest.raises(RuntimeError, match="cuda"):
        backends.pick("lstm", {"cuda": Fake("cuda"), **fakes()}, CPU, backend="cuda")


def test_meta_tensors_go_to_the_reference():
    # not the CPU kernels, nor the Triton interpreter (which takes CPU tensors only)
    assert backends.pick("lstm", fakes(), torch.device("meta")).name == "reference"


def test_torch_func_transforms_go_to_the_reference():
    from torch.func import vmap
    picked = []

    def f(x):
        picked.append(backends.pick("lstm", fakes(), CPU).name)
        with pytest.raises(RuntimeError, match="torch.func transforms"):
            backends.pick("lstm", fakes(), CPU, backend="cpu")
        return x * 2

    vmap(f)(torch.ones(3, 2))
    assert picked == ["reference"]
    # and outside the transform the (cached) choice is the kernel again
    assert backends.pick("lstm", fakes(), CPU).name != "reference" or not _ext.has_ext()


def test_fallback_when_a_backend_refuses():
    picked = backends.pick("lstm", fakes(cpu="no", triton="no"), CPU)
    assert picked.name == "reference"
    if backends.triton_interpreted():
        assert backends.pick("lstm", fakes(cpu="no"), CPU).name == "triton"


def test_no_backend_raises_with_every_reason():
    with pytest.raises(RuntimeError, match="reason-A.*reason-B"):
        backends.pick("lstm", {"cpu": Fake("cpu", "reason-A"), "reference": Fake("reference", "reason-B")},
                      CPU)


@pytest.mark.skipif(not _ext.has_ext(), reason="fastrnn._C not built")
def test_op_falls_back_to_reference_for_half(monkeypatch):
    """cpu refuses float16: the op still runs (on another backend) and gives the right answer."""
    ran = []
    monkeypatch.setattr(lstm_ops.IMPLS["cpu"], "fwd", lambda *a: ran.append("cpu"))
    if backends.triton_interpreted():
        monkeypatch.setitem(lstm_ops.IMPLS, "triton", Fake("triton", "off for this test"))
    T, B, I, H = 3, 2, 4, 5
    x = torch.randn(T, B, I)
    h0, c0 = torch.zeros(B, H), torch.zeros(B, H)
    w_ih, w_hh = torch.randn(4 * H, I) * 0.3, torch.randn(4 * H, H) * 0.3
    y, _ = fastrnn.ops.lstm(x.half(), h0.half(), c0.half(), w_ih.half(), w_hh.half())
    y_ref, _ = lstm_ops.naive.lstm(x, h0, c0, w_ih, w_hh)
    assert ran == [] and y.dtype == torch.float16
    torch.testing.assert_close(y.float(), y_ref, atol=2e-2, rtol=2e-2)


@pytest.mark.skipif(not _ext.has_ext(), reason="fastrnn._C not built")
def test_op_uses_env_backend(monkeypatch):
    """FASTRNN_BACKEND=reference keeps the cpu kernel from running; backend='cpu' overrides it."""
    ran = []
    real = lstm_ops.IMPLS["cpu"].fwd
    monkeypatch.setattr(lstm_ops.IMPLS["cpu"], "fwd", lambda *a: ran.append("cpu") or real(*a))
    monkeypatch.setenv("FASTRNN_BACKEND", "reference")
    x = torch.randn(2, 1, 3)
    h0 = c0 = torch.zeros(1, 4)
    w_ih, w_hh = torch.randn(16, 3), torch.randn(16, 4)
    fastrnn.ops.lstm(x, h0, c0, w_ih, w_hh)
    assert ran == []
    fastrnn.ops.lstm(x, h0, c0, w_ih, w_hh, backend="cpu")
    assert ran == ["cpu"]
