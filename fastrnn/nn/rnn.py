"""Drop-in torch.nn.LSTM/GRU/LSTMCell/GRUCell on fastrnn's ops.

Each class subclasses its torch.nn counterpart, so parameters, state_dict keys, init,
``reset_parameters``, ``repr``, ``flatten_parameters`` and constructor validation are torch's own,
and ``isinstance(m, torch.nn.LSTM)`` holds. Only ``forward`` differs: every layer and direction
is one call of ``fastrnn.ops.lstm``/``gru`` (``reverse=True`` for the second direction,
``lengths=`` for packed input) and cells call ``fastrnn.ops.lstm_cell``/``gru_cell``, each with
the module's ``backend``.

Shapes: T time, B batch, I input size, H hidden size, P = proj_size or H, D = 1 or 2 directions,
L layers. Hidden states are [L*D, B, P] (and c: [L*D, B, H]), layer-major, as torch's.
"""
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from fastrnn import backends, ops

__all__ = ["LSTM", "GRU", "LSTMCell", "GRUCell"]


def _check_backend(backend: Optional[str]) -> Optional[str]:
    if backend is not None and backend not in backends.NAMES:
        raise ValueError(f"backend must be one of {backends.NAMES} or None, got {backend!r}")
    return backend


def _backend_repr(module) -> str:
    return "" if module.backend is None else f", backend={module.backend!r}"


def _check_batch_sizes(data: Tensor, batch_sizes: Tensor) -> None:
    """A PackedSequence built by hand can carry batch_sizes that torch's kernels misread; name
    the fault instead, with the exception type torch raises for the same input."""
    if batch_sizes.dim() != 1 or batch_sizes.numel() == 0:
        raise TypeError(f"PackedSequence.batch_sizes must be a non-empty 1-D tensor, "
                        f"got shape {list(batch_sizes.shape)}")
    if batch_sizes.dtype != torch.int64 or batch_sizes.device.type != "cpu":
        raise RuntimeError(f"PackedSequence.batch_sizes must be an int64 CPU tensor, got "
                           f"{batch_sizes.dtype} on {batch_sizes.device}")
    if int(batch_sizes[0]) == 0:
        raise ValueError("PackedSequence holds an empty batch (batch_sizes[0] == 0)")
    if int(batch_sizes.min()) < 1 or bool((batch_sizes[1:] > batch_sizes[:-1]).any()):
        raise RuntimeError("PackedSequence.batch_sizes must be positive and non-increasing "
                           f"(sequences sorted by decreasing length), got {batch_sizes.tolist()}")
    if data.dim() != 2 or int(batch_sizes.sum()) != data.size(0):
        raise RuntimeError(f"PackedSequence.data must have shape [{int(batch_sizes.sum())}, "
                           f"input_size] (batch_sizes sum to {int(batch_sizes.sum())}), got "
                           f"{list(data.shape)}")


def _amp_dtype(x: Tensor, weight: Tensor, lstm_layer: bool) -> Optional[torch.dtype]:
    """The dtype torch.autocast would run this RNN in, or None outside autocast / when it would
    keep the weights' dtype. Mirrors torch: on CUDA every RNN op is cast to the autocast dtype
    (cuDNN RNNs and the cells are on its lower-precision list); on the CPU the LSTM layer op is,
    while GRU and the cells run their matmuls low but stay in the input's dtype."""
    dev = x.device.type
    if not x.is_floating_point() or not torch.amp.is_autocast_available(dev) or not torch.is_autocast_enabled(dev):
        return None
    if dev == "cuda" or lstm_layer or x.dtype != weight.dtype:
        return torch.get_autocast_dtype(dev)
    return None


def _cast(t: Optional[Tensor], dtype: Optional[torch.dtype]) -> Optional[Tensor]:
    return t if t is None or dtype is None else t.to(dtype)


def _check_run(x: Tensor, states: Sequence[Tensor], params: Sequence[Tensor]) -> None:
    """What torch's RNN kernels refuse (or silently accept) that the shape checks miss.

    x is [T, B, I] after batch_first/unbatched handling; states are the [L*D, B, *] tensors.
    """
    if x.size(0) == 0:
        # torch's wording and type (RuntimeError) for an empty sequence
        raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
    if x.size(1) == 0:
        raise ValueError(f"input holds an empty batch (B = 0, input shape {list(x.shape)}); "
                         "fastrnn needs at least one sequence")
    for s in states:
        if s.device != x.device:
            raise RuntimeError("Input and hidden tensors are not at the same device, found input "
                               f"tensor at {x.device} and hidden tensor at {s.device}")
        if s.dtype != x.dtype:
            raise RuntimeError(f"hidden state dtype ({s.dtype}) does not match input dtype "
                               f"({x.dtype}); pass hx with dtype {x.dtype}")
    for p in params:
        if p.device != x.device:
            raise RuntimeError("Input and parameter tensors are not at the same device, found "
                               f"input tensor at {x.device} and parameter tensor at {p.device}")


class _RNNMixin:
    """The layer loop shared by LSTM and GRU; the subclass runs one layer-direction in _layer."""

    backend: Optional[str] = None   # class default keeps modules pickled without it loadable

    def _param(self, name: str, layer: int, direction: int, amp) -> Optional[Tensor]:
        # getattr (not self._flat_weights) so torch.func.functional_call and parametrizations
        # see the tensors they substitute
        w = getattr(self, f"{name}_l{layer}{'_reverse' if direction else ''}", None)
        return _cast(w, amp)

    def _params(self) -> List[Tensor]:
        return [getattr(self, n) for n in self._flat_weights_names if hasattr(self, n)]

    def _layer(self, x, states, layer, direction, lengths, amp):
        raise NotImplementedError

    def _run(self, x: Tensor, states: List[Tensor], batch_sizes: Optional[Tensor]):
        """x [T,B,I] (or packed data [sum(len), I] with batch_sizes), states [L*D,B,*] ->
        (output like x, final states [L*D,B,*])."""
        lengths = None
        if batch_sizes is not None:
            x, lengths = pad_packed_sequence(PackedSequence(x, batch_sizes))
        amp = _amp_dtype(x, self._flat_weights[0], isinstance(self, torch.nn.LSTM))
        x, states = _cast(x, amp), [_cast(s, amp) for s in states]
        _check_run(x, states, self._params())
        D = 2 if self.bidirectional else 1
        finals: List[List[Tensor]] = [[] for _ in states]
        for layer in range(self.num_layers):
            outs = []
            for d in range(D):
                k = layer * D + d
                y, fin = self._layer(x, [s[k] for s in states], layer, d, lengths, amp)
                outs.append(y)
                for acc, f in zip(finals, fin):
                    acc.append(f)
            x = outs[0] if D == 1 else torch.cat(outs, 2)
            # torch drops out each layer's output but the last, in training mode only
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, training=True)
        if batch_sizes is not None:
            x = pack_padded_sequence(x, lengths).data
        return x, [torch.stack(f) for f in finals]

    def _batched(self, input: Tensor):
        """3-D batch_first or time-major input -> time-major."""
        return input.transpose(0, 1) if self.batch_first else input

    def extra_repr(self) -> str:
        return super().extra_repr() + _backend_repr(self)


class LSTM(_RNNMixin, torch.nn.LSTM):
    """torch.nn.LSTM on fastrnn.ops.lstm. Takes torch.nn.LSTM's arguments plus ``backend=``
    (None: fastrnn.backends picks per call)."""

    def __init__(self, *args, backend: Optional[str] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.backend = _check_backend(backend)

    def _layer(self, x, states, layer, direction, lengths, amp):
        w = lambda name: self._param(name, layer, direction, amp)  # noqa: E731
        y, (h, c) = ops.lstm(x, states[0], states[1], w("weight_ih"), w("weight_hh"),
                             w("bias_ih"), w("bias_hh"), backend=self.backend,
                             w_hr=w("weight_hr"), lengths=lengths, reverse=bool(direction))
        return y, (h, c)

    def forward(self, input, hx=None):
        # The argument handling mirrors torch.nn.LSTM.forward so that every accepted input,
        # returned shape and exception type is torch's; only the compute differs.
        self._update_flat_weights()
        num_directions = 2 if self.bidirectional else 1
        real_hidden_size = self.proj_size if self.proj_size > 0 else self.hidden_size
        if isinstance(input, PackedSequence):
            data, batch_sizes, sorted_indices, unsorted_indices = input
            _check_batch_sizes(data, batch_sizes)
            _check_packed_dtype(self, data)
            max_batch_size = int(batch_sizes[0])
            if hx is None:
                hx = _zeros_state(self, data, max_batch_size, (real_hidden_size, self.hidden_size))
            _check_two_states(hx)
            self.check_forward_args(data, hx, batch_sizes)
            hx = self.permute_hidden(hx, sorted_indices)
            out, (h, c) = self._run(data, list(hx), batch_sizes)
            out = PackedSequence(out, batch_sizes, sorted_indices, unsorted_indices)
            return out, self.permute_hidden((h, c), unsorted_indices)

        if input.dim() not in (2, 3):
            raise ValueError(f"LSTM: Expected input to be 2D or 3D, got {input.dim()}D instead")
        is_batched = input.dim() == 3
        batch_dim = 0 if self.batch_first else 1
        if not is_batched:
            input = input.unsqueeze(batch_dim)
        max_batch_size = input.size(0) if self.batch_first else input.size(1)
        if hx is None:
            hx = _zeros_state(self, input, max_batch_size, (real_hidden_size, self.hidden_size))
        else:
            if is_batched:
                if hx[0].dim() != 3 or hx[1].dim() != 3:
                    raise RuntimeError("For batched 3-D input, hx and cx should also be 3-D but "
                                       f"got ({hx[0].dim()}-D, {hx[1].dim()}-D) tensors")
            else:
                if hx[0].dim() != 2 or hx[1].dim() != 2:
                    raise RuntimeError("For unbatched 2-D input, hx and cx should also be 2-D but "
                                       f"got ({hx[0].dim()}-D, {hx[1].dim()}-D) tensors")
                hx = (hx[0].unsqueeze(1), hx[1].unsqueeze(1))
        self.check_forward_args(input, hx, None)
        _check_two_states(hx)
        out, (h, c) = self._run(self._batched(input), list(hx), None)
        out = self._batched(out)
        if not is_batched:
            out, h, c = out.squeeze(batch_dim), h.squeeze(1), c.squeeze(1)
        return out, (h, c)


class GRU(_RNNMixin, torch.nn.GRU):
    """torch.nn.GRU on fastrnn.ops.gru. Takes torch.nn.GRU's arguments plus ``backend=``."""

    def __init__(self, *args, backend: Optional[str] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.backend = _check_backend(backend)

    def _layer(self, x, states, layer, direction, lengths, amp):
        w = lambda name: self._param(name, layer, direction, amp)  # noqa: E731
        y, h = ops.gru(x, states[0], w("weight_ih"), w("weight_hh"), w("bias_ih"), w("bias_hh"),
                       backend=self.backend, lengths=lengths, reverse=bool(direction))
        return y, (h,)

    def forward(self, input, hx=None):
        # Mirrors torch.nn.GRU.forward's argument handling (see LSTM.forward).
        self._update_flat_weights()
        if isinstance(input, PackedSequence):
            data, batch_sizes, sorted_indices, unsorted_indices = input
            _check_batch_sizes(data, batch_sizes)
            # unlike LSTM, torch's GRU runs check_input on packed data too (dtype: ValueError)
            max_batch_size = int(batch_sizes[0])
            if hx is None:
                hx = _zeros_state(self, data, max_batch_size, (self.hidden_size,))[0]
            self.check_forward_args(data, hx, batch_sizes)
            hx = self.permute_hidden(hx, sorted_indices)
            out, (h,) = self._run(data, [hx], batch_sizes)
            out = PackedSequence(out, batch_sizes, sorted_indices, unsorted_indices)
            return out, self.permute_hidden(h, unsorted_indices)

        if input.dim() not in (2, 3):
            raise ValueError(f"GRU: Expected input to be 2D or 3D, got {input.dim()}D instead")
        is_batched = input.dim() == 3
        batch_dim = 0 if self.batch_first else 1
        if not is_batched:
            input = input.unsqueeze(batch_dim)
            if hx is not None:
                if hx.dim() != 2:
                    raise RuntimeError("For unbatched 2-D input, hx should also be 2-D but got "
                                       f"{hx.dim()}-D tensor")
                hx = hx.unsqueeze(1)
        elif hx is not None and hx.dim() != 3:
            raise RuntimeError(f"For batched 3-D input, hx should also be 3-D but got {hx.dim()}-D tensor")
        max_batch_size = input.size(0) if self.batch_first else input.size(1)
        if hx is None:
            hx = _zeros_state(self, input, max_batch_size, (self.hidden_size,))[0]
        self.check_forward_args(input, hx, None)
        out, (h,) = self._run(self._batched(input), [hx], None)
        out = self._batched(out)
        if not is_batched:
            out, h = out.squeeze(batch_dim), h.squeeze(1)
        return out, h


def _check_two_states(hx) -> None:
    if len(hx) != 2:
        raise RuntimeError(f"lstm expects two hidden states (h_0, c_0), got {len(hx)}")


def _zeros_state(module, x: Tensor, batch: int, sizes: Sequence[int]):
    n = module.num_layers * (2 if module.bidirectional else 1)
    return tuple(torch.zeros(n, batch, s, dtype=x.dtype, device=x.device) for s in sizes)


def _check_packed_dtype(module, data: Tensor) -> None:
    # torch's packed LSTM path skips check_input's dtype test and fails later in a matmul with
    # a RuntimeError; keep that type, with check_input's clearer wording
    w = module._flat_weights[0]
    if data.dtype != w.dtype and not torch.is_autocast_enabled(data.device.type):
        raise RuntimeError(f"RNN input dtype ({data.dtype}) does not match weight dtype "
                           f"({w.dtype}). Convert input: input.to({w.dtype}), or convert model: "
                           f"model.to({data.dtype})")


def _cell_prepare(module, name: str, input: Tensor, hx: List[Tensor]):
    """torch's ATen checks for rnn cells (same wording, RuntimeError), plus what they miss."""
    if input.size(1) != module.input_size:
        raise RuntimeError(f"input has inconsistent input_size: got {input.size(1)} expected "
                           f"{module.input_size}")
    for i, h in enumerate(hx):
        if h.size(0) != input.size(0):
            raise RuntimeError(f"Input batch size {input.size(0)} doesn't match hidden{i} batch "
                               f"size {h.size(0)}")
        if h.dim() < 2:
            # torch's ATen check indexes size(1) here, an IndexError: keep the type
            raise IndexError(f"hidden{i} must have shape [{input.size(0)}, {module.hidden_size}] "
                             f"for 2-D input, got {list(h.shape)}")
        if h.size(1) != module.hidden_size:
            raise RuntimeError(f"hidden{i} has inconsistent hidden_size: got {h.size(1)}, "
                               f"expected {module.hidden_size}")
        if h.dim() != 2:
            raise RuntimeError(f"hidden{i} must have shape [B, {module.hidden_size}], got "
                               f"{list(h.shape)}")
    if input.size(0) == 0:
        raise ValueError(f"{name}: input holds an empty batch (B = 0, input shape "
                         f"{list(input.shape)}); fastrnn needs at least one row")
    w = module.weight_ih
    amp = _amp_dtype(input, w, False)
    for t, what in [(input, "input")] + [(h, f"hx[{i}]") for i, h in enumerate(hx)]:
        if t.dtype != w.dtype and amp is None:
            raise RuntimeError(f"{name}: {what} dtype ({t.dtype}) does not match weight dtype "
                               f"({w.dtype})")
        if t.device != w.device:
            raise RuntimeError(f"{name}: {what} is on {t.device} but the weights are on {w.device}")
    return amp


class LSTMCell(torch.nn.LSTMCell):
    """torch.nn.LSTMCell on fastrnn.ops.lstm_cell; takes its arguments plus ``backend=``."""

    backend: Optional[str] = None

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None,
                 dtype=None, backend: Optional[str] = None):
        super().__init__(input_size, hidden_size, bias, device=device, dtype=dtype)
        self.backend = _check_backend(backend)

    def extra_repr(self) -> str:
        return super().extra_repr() + _backend_repr(self)

    def forward(self, input: Tensor, hx=None):
        if input.dim() not in (1, 2):
            raise ValueError(f"LSTMCell: Expected input to be 1D or 2D, got {input.dim()}D instead")
        if hx is not None:
            for idx, value in enumerate(hx):
                if value.dim() not in (1, 2):
                    raise ValueError(f"LSTMCell: Expected hx[{idx}] to be 1D or 2D, got "
                                     f"{value.dim()}D instead")
        is_batched = input.dim() == 2
        if not is_batched:
            input = input.unsqueeze(0)
        if hx is None:
            zeros = torch.zeros(input.size(0), self.hidden_size, dtype=input.dtype,
                                device=input.device)
            hx = (zeros, zeros)
        else:
            if len(hx) != 2:
                raise RuntimeError("lstm_cell expects two hidden states")
            hx = (hx[0].unsqueeze(0), hx[1].unsqueeze(0)) if not is_batched else tuple(hx)
        amp = _cell_prepare(self, "LSTMCell", input, list(hx))
        input, hx = _cast(input, amp), [_cast(h, amp) for h in hx]
        h, c = ops.lstm_cell(input, hx[0], hx[1], _cast(self.weight_ih, amp),
                             _cast(self.weight_hh, amp), _cast(self.bias_ih, amp),
                             _cast(self.bias_hh, amp), backend=self.backend)
        if not is_batched:
            h, c = h.squeeze(0), c.squeeze(0)
        return h, c


class GRUCell(torch.nn.GRUCell):
    """torch.nn.GRUCell on fastrnn.ops.gru_cell; takes its arguments plus ``backend=``."""

    backend: Optional[str] = None

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None,
                 dtype=None, backend: Optional[str] = None):
        super().__init__(input_size, hidden_size, bias, device=device, dtype=dtype)
        self.backend = _check_backend(backend)

    def extra_repr(self) -> str:
        return super().extra_repr() + _backend_repr(self)

    def forward(self, input: Tensor, hx: Optional[Tensor] = None) -> Tensor:
        if input.dim() not in (1, 2):
            raise ValueError(f"GRUCell: Expected input to be 1D or 2D, got {input.dim()}D instead")
        if hx is not None and hx.dim() not in (1, 2):
            raise ValueError(f"GRUCell: Expected hidden to be 1D or 2D, got {hx.dim()}D instead")
        is_batched = input.dim() == 2
        if not is_batched:
            input = input.unsqueeze(0)
        if hx is None:
            hx = torch.zeros(input.size(0), self.hidden_size, dtype=input.dtype,
                             device=input.device)
        elif not is_batched:
            hx = hx.unsqueeze(0)
        amp = _cell_prepare(self, "GRUCell", input, [hx])
        h = ops.gru_cell(_cast(input, amp), _cast(hx, amp), _cast(self.weight_ih, amp),
                         _cast(self.weight_hh, amp), _cast(self.bias_ih, amp),
                         _cast(self.bias_hh, amp), backend=self.backend)
        return h.squeeze(0) if not is_batched else h
