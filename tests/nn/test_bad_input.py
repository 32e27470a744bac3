"""Bad input to fastrnn.LSTM/GRU/LSTMCell/GRUCell raises what torch.nn raises (same exception
type, a message naming the fault), and a clear error where torch.nn silently accepts it.

The modules run on the reference backend: what is tested is the modules' validation, which runs
before any kernel.
"""
import pytest
import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import fastrnn

I, H = 3, 4


def pair(mode, **kw):
    torch.manual_seed(0)
    ref = getattr(torch.nn, mode)(I, H, **kw)
    mod = getattr(fastrnn, mode)(I, H, backend="reference", **kw)
    mod.load_state_dict(ref.state_dict())
    return ref, mod


def x3(T=2, B=2, i=I, **kw):
    return torch.randn(T, B, i, **kw)


def zeros(*s, **kw):
    return torch.zeros(*s, **kw)


def lstm_hx(n=1, B=2, h=H, c=H, hkw=None, ckw=None):
    return (zeros(n, B, h, **(hkw or {})), zeros(n, B, c, **(ckw or {})))


def packed(lengths=(2, 1), i=I, dtype=torch.float32, enforce_sorted=True):
    return pack_padded_sequence(torch.randn(max(lengths), len(lengths), i, dtype=dtype),
                                torch.tensor(lengths), enforce_sorted=enforce_sorted)


# (id, mode, constructor kwargs, args builder, exception type torch.nn raises, match for ours)
SAME_AS_TORCH = [
    ("4d-input", "LSTM", {}, lambda: (torch.randn(2, 2, 2, I),), ValueError, "2D or 3D"),
    ("1d-input", "GRU", {}, lambda: (torch.randn(I),), ValueError, "2D or 3D"),
    ("wrong-input-size", "LSTM", {}, lambda: (x3(i=I + 1),), RuntimeError, "input_size"),
    ("wrong-input-size-bf", "GRU", {"batch_first": True}, lambda: (x3(i=I + 2),), RuntimeError, "input_size"),
    ("input-fp64-weights-fp32", "LSTM", {}, lambda: (x3(dtype=torch.float64),), ValueError, "dtype"),
    ("input-int", "GRU", {}, lambda: (torch.ones(2, 2, I, dtype=torch.long),), ValueError, "dtype"),
    ("empty-sequence-T0", "LSTM", {}, lambda: (x3(T=0),), RuntimeError, "sequence length"),
    ("empty-sequence-T0", "GRU", {"batch_first": True}, lambda: (torch.randn(2, 0, I),), RuntimeError,
     "sequence length"),
    ("hx-wrong-hidden-size", "LSTM", {}, lambda: (x3(), lstm_hx(h=H + 1)), RuntimeError, r"hidden\[0\] size"),
    ("cx-wrong-size", "LSTM", {}, lambda: (x3(), lstm_hx(c=H + 1)), RuntimeError, r"hidden\[1\] size"),
    ("hx-wrong-layers", "GRU", {"num_layers": 2}, lambda: (x3(), zeros(1, 2, H)), RuntimeError, "hidden size"),
    ("hx-wrong-batch", "GRU", {}, lambda: (x3(), zeros(1, 3, H)), RuntimeError, "hidden size"),
    ("hx-wrong-directions", "LSTM", {"bidirectional": True}, lambda: (x3(), lstm_hx(n=1)), RuntimeError,
     "size"),
    ("hx-proj-size-ignored", "LSTM", {"proj_size": 2}, lambda: (x3(), lstm_hx(h=H)), RuntimeError,
     r"hidden\[0\] size \(1, 2, 2\)"),
    ("hx-2d-for-batched", "LSTM", {}, lambda: (x3(), (zeros(2, H), zeros(2, H))), RuntimeError, "3-D"),
    ("hx-2d-for-batched", "GRU", {}, lambda: (x3(), zeros(2, H)), RuntimeError, "3-D"),
    ("hx-3d-for-unbatched", "LSTM", {}, lambda: (torch.randn(2, I), lstm_hx(B=1)), RuntimeError, "2-D"),
    ("hx-3d-for-unbatched", "GRU", {}, lambda: (torch.randn(2, I), zeros(1, 1, H)), RuntimeError, "2-D"),
    ("hx-not-a-tuple", "LSTM", {}, lambda: (x3(), zeros(2, 2, H)), RuntimeError, "3-D"),
    ("hx-three-states", "LSTM", {}, lambda: (x3(), (zeros(1, 2, H),) * 3), RuntimeError, "two hidden states"),
    ("packed-hx-three-states", "LSTM", {}, lambda: (packed(), (zeros(1, 2, H),) * 3), RuntimeError,
     "two hidden states"),
    ("hx-not-a-tuple-one-layer", "LSTM", {}, lambda: (x3(), zeros(1, 2, H)), IndexError, "out of bounds"),
    ("hx-dtype", "GRU", {}, lambda: (x3(), zeros(1, 2, H, dtype=torch.float64)), RuntimeError, "dtype"),
    ("cx-dtype", "LSTM", {}, lambda: (x3(), lstm_hx(ckw={"dtype": torch.float64})), RuntimeError, "dtype"),
    ("hx-int", "LSTM", {}, lambda: (x3(), lstm_hx(hkw={"dtype": torch.long}, ckw={"dtype": torch.long})),
     RuntimeError, "dtype"),
    ("hx-other-device", "GRU", {}, lambda: (x3(), zeros(1, 2, H, device="meta")), RuntimeError, "same device"),
    ("cx-other-device", "LSTM", {}, lambda: (x3(), lstm_hx(ckw={"device": "meta"})), RuntimeError,
     "same device"),
    ("packed-hx-wrong-batch", "LSTM", {}, lambda: (packed(), lstm_hx(B=3)), RuntimeError, "size"),
    ("packed-hx-wrong-batch", "GRU", {}, lambda: (packed(), zeros(1, 3, H)), RuntimeError, "hidden size"),
    ("packed-wrong-input-size", "LSTM", {}, lambda: (packed(i=I + 1),), RuntimeError, "input_size"),
    ("packed-unsorted-dtype", "GRU", {}, lambda: (packed((1, 2), dtype=torch.float64, enforce_sorted=False),),
     ValueError, "dtype"),
    ("packed-unsorted-dtype", "LSTM", {}, lambda: (packed((1, 2), dtype=torch.float64, enforce_sorted=False),),
     RuntimeError, "dtype"),
    ("packed-batch-sizes-increasing", "LSTM", {}, lambda: (PackedSequence(torch.randn(3, I), torch.tensor([1, 2])),),
     RuntimeError, "non-increasing"),
    ("packed-batch-sizes-sum", "LSTM", {}, lambda: (PackedSequence(torch.randn(5, I), torch.tensor([2, 2])),),
     RuntimeError, "batch_sizes sum"),
    ("packed-batch-sizes-2d", "LSTM", {}, lambda: (PackedSequence(torch.randn(4, I), torch.tensor([[2, 2]])),),
     TypeError, "1-D"),
    ("packed-batch-sizes-int32", "GRU", {},
     lambda: (PackedSequence(torch.randn(4, I), torch.tensor([2, 2], dtype=torch.int32)),), RuntimeError, "int64"),
    # cells
    ("3d-input", "LSTMCell", {}, lambda: (x3(),), ValueError, "1D or 2D"),
    ("3d-input", "GRUCell", {}, lambda: (x3(),), ValueError, "1D or 2D"),
    ("hx-3d", "LSTMCell", {}, lambda: (torch.randn(2, I), (zeros(1, 2, H), zeros(2, H))), ValueError,
     r"hx\[0\]"),
    ("hx-3d", "GRUCell", {}, lambda: (torch.randn(2, I), zeros(1, 2, H)), ValueError, "hidden"),
    ("wrong-input-size", "LSTMCell", {}, lambda: (torch.randn(2, I + 1),), RuntimeError, "input_size"),
    ("wrong-input-size", "GRUCell", {}, lambda: (torch.randn(2, I + 1),), RuntimeError, "input_size"),
    ("hx-wrong-batch", "LSTMCell", {}, lambda: (torch.randn(2, I), (zeros(3, H), zeros(3, H))), RuntimeError,
     "batch size"),
    ("hx-wrong-batch", "GRUCell", {}, lambda: (torch.randn(2, I), zeros(3, H)), RuntimeError, "batch size"),
    ("hx-wrong-hidden-size", "LSTMCell", {}, lambda: (torch.randn(2, I), (zeros(2, H + 1), zeros(2, H))),
     RuntimeError, "hidden0 has inconsistent hidden_size"),
    ("cx-wrong-hidden-size", "LSTMCell", {}, lambda: (torch.randn(2, I), (zeros(2, H), zeros(2, H + 1))),
     RuntimeError, "hidden1 has inconsistent hidden_size"),
    ("hx-wrong-hidden-size", "GRUCell", {}, lambda: (torch.randn(2, I), zeros(2, H + 1)), RuntimeError,
     "hidden_size"),
    ("1d-input-2d-hx", "LSTMCell", {}, lambda: (torch.randn(I), (zeros(1, H), zeros(1, H))), RuntimeError,
     "hidden_size"),
    ("1d-input-2d-hx", "GRUCell", {}, lambda: (torch.randn(I), zeros(1, H)), RuntimeError, "hidden_size"),
    ("2d-input-1d-hx", "LSTMCell", {}, lambda: (torch.randn(2, I), (zeros(H), zeros(H))), RuntimeError,
     "batch size"),
    ("2d-input-1d-hx-same-size", "GRUCell", {}, lambda: (torch.randn(H, I), zeros(H)), IndexError,
     "hidden0 must have shape"),
    ("2d-input-1d-hx-same-size", "LSTMCell", {}, lambda: (torch.randn(H, I), (zeros(H), zeros(H))),
     IndexError, "hidden0 must have shape"),
    ("one-state", "LSTMCell", {}, lambda: (torch.randn(2, I), (zeros(2, H),)), RuntimeError, "two hidden states"),
    ("input-fp64", "LSTMCell", {}, lambda: (torch.randn(2, I, dtype=torch.float64),), RuntimeError, "dtype"),
    ("input-int", "GRUCell", {}, lambda: (torch.ones(2, I, dtype=torch.long),), RuntimeError, "dtype"),
    ("hx-fp64", "GRUCell", {}, lambda: (torch.randn(2, I), zeros(2, H, dtype=torch.float64)), RuntimeError,
     "dtype"),
]


@pytest.mark.parametrize("mode, kw, build, expected, match",
                         [pytest.param(*c[1:], id=f"{c[1]}-{c[0]}") for c in SAME_AS_TORCH])
def test_same_exception_type_as_torch(mode, kw, build, expected, match):
    ref, mod = pair(mode, **kw)
    args = build()
    with pytest.raises(Exception) as torch_exc:
        ref(*args)
    assert type(torch_exc.value) is expected, f"torch.nn now raises {type(torch_exc.value).__name__}"
    with pytest.raises(expected, match=match):
        mod(*args)


def test_parameter_on_other_device_same_type_as_torch():
    ref, mod = pair("LSTM")
    for m in (ref, mod):
        m.weight_hh_l0 = torch.nn.Parameter(m.weight_hh_l0.detach().to("meta"))
    with pytest.raises(RuntimeError):
        ref(x3())
    with pytest.raises(RuntimeError, match="parameter tensor at meta"):
        mod(x3())


@pytest.mark.parametrize("mode", ["LSTMCell", "GRUCell"])
def test_cell_hx_on_other_device(mode):
    # torch.nn's cells raise RuntimeError here too, but reaching it imports torch._dynamo (10+ s
    # of CI time) to run the meta kernels, so torch is not called in this test.
    _, mod = pair(mode)
    h = zeros(2, H, device="meta")
    with pytest.raises(RuntimeError, match="is on meta but the weights are on cpu"):
        mod(torch.randn(2, I), (h, zeros(2, H)) if mode == "LSTMCell" else h)


# torch.nn accepts these silently (empty outputs, or a PackedSequence no packing function makes);
# fastrnn names the fault instead.
TORCH_ACCEPTS = [
    ("empty-batch", "LSTM", {}, lambda: (x3(B=0),), ValueError, "empty batch"),
    ("empty-batch-bf", "GRU", {"batch_first": True}, lambda: (torch.randn(0, 2, I),), ValueError, "empty batch"),
    ("empty-batch", "LSTMCell", {}, lambda: (torch.randn(0, I),), ValueError, "empty batch"),
    ("empty-batch", "GRUCell", {}, lambda: (torch.randn(0, I),), ValueError, "empty batch"),
    ("packed-empty", "LSTM", {}, lambda: (PackedSequence(torch.randn(0, I), torch.tensor([0])),), ValueError,
     "empty batch"),
    ("packed-batch-size-zero", "GRU", {}, lambda: (PackedSequence(torch.randn(2, I), torch.tensor([2, 0])),),
     RuntimeError, "positive"),
    ("packed-batch-sizes-sum", "GRU", {}, lambda: (PackedSequence(torch.randn(5, I), torch.tensor([2, 2])),),
     RuntimeError, "batch_sizes sum"),
    ("cx-fp64", "LSTMCell", {}, lambda: (torch.randn(2, I), (zeros(2, H), zeros(2, H, dtype=torch.float64))),
     RuntimeError, "dtype"),
]


@pytest.mark.parametrize("mode, kw, build, expected, match",
                         [pytest.param(*c[1:], id=f"{c[1]}-{c[0]}") for c in TORCH_ACCEPTS])
def test_clear_error_where_torch_accepts(mode, kw, build, expected, match):
    ref, mod = pair(mode, **kw)
    args = build()
    ref(*args)   # documents that torch.nn takes it; if torch starts raising, compare types instead
    with pytest.raises(expected, match=match):
        mod(*args)


CONSTRUCTOR = [
    ("gru-proj-size", "GRU", dict(input_size=I, hidden_size=H, proj_size=2)),
    ("dropout-above-1", "LSTM", dict(input_size=I, hidden_size=H, dropout=1.5)),
    ("dropout-bool", "GRU", dict(input_size=I, hidden_size=H, dropout=True)),
    ("proj-not-below-hidden", "LSTM", dict(input_size=I, hidden_size=H, proj_size=H)),
    ("proj-negative", "LSTM", dict(input_size=I, hidden_size=H, proj_size=-1)),
    ("hidden-zero", "GRU", dict(input_size=I, hidden_size=0)),
    ("layers-zero", "LSTM", dict(input_size=I, hidden_size=H, num_layers=0)),
    ("input-size-float", "LSTM", dict(input_size=3.0, hidden_size=H)),
    ("bias-not-bool", "GRU", dict(input_size=I, hidden_size=H, bias=1)),
    ("batch-first-not-bool", "LSTM", dict(input_size=I, hidden_size=H, batch_first="yes")),
]


@pytest.mark.parametrize("mode, kw", [pytest.param(*c[1:], id=f"{c[1]}-{c[0]}") for c in CONSTRUCTOR])
def test_constructor_same_exception_as_torch(mode, kw):
    with pytest.raises(Exception) as torch_exc:
        getattr(torch.nn, mode)(**kw)
    with pytest.raises(type(torch_exc.value)) as ours:
        getattr(fastrnn, mode)(**kw)
    assert type(ours.value) is type(torch_exc.value)
    assert str(ours.value) == str(torch_exc.value)


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "LSTMCell", "GRUCell"])
def test_unknown_backend_name(mode):
    with pytest.raises(ValueError, match="backend must be one of"):
        getattr(fastrnn, mode)(I, H, backend="cudnn")


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "LSTMCell", "GRUCell"])
def test_backend_that_cannot_run_the_call(mode):
    """An explicit backend is never silently replaced: CUDA kernels on CPU tensors refuse."""
    mod = getattr(fastrnn, mode)(I, H, backend="cuda")
    x = torch.randn(2, I) if "Cell" in mode else x3()
    with pytest.raises(RuntimeError, match="backend 'cuda'"):
        mod(x)
