"""Seq2seq building blocks: ``Encoder`` and ``AttentionDecoder`` on fastrnn's modules.

Shape legend: B batch, S source length, T target length, V vocabulary, E embedding size,
H hidden size (per direction for the encoder), L layers, D directions (1 or 2),
M = memory size = the encoder's output size (H * D), O = the decoder's output vector size
(E when the output projection is tied to the embeddings, else the decoder's H).

    enc = Encoder(V, E, H, num_layers, cell, bidirectional, ...)
    out = enc(src [B,S] long, lengths [B] long) -> EncoderOutput(states [B,S,M], mask [B,S], hidden)
    dec = AttentionDecoder(V, E, H, M, num_layers, cell, attention, ...)
    logits [B,T,V], attn [B,T,S] = dec(tgt_in [B,T], out)          # teacher forcing
    state = dec.init_state(out); logits [B,V], state, attn [B,S] = dec.step(tokens [B], state)

The decoder is Luong's (Effective Approaches to Attention-based NMT, 2015): the top layer's
state h_t queries the source, the attentional vector is o_t = tanh(W_c [c_t; h_t]) and, with
input feeding, o_{t-1} is concatenated to the embedding of the next input token.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from fastrnn.nn.attention import Attention, AttentionMemory
from fastrnn.nn.rnn import GRU, LSTM, GRUCell, LSTMCell
from fastrnn.ops.linear import linear, linear_cat

CELLS = ("gru", "lstm")
ATTENTION_KINDS = ("dot", "general", "low_rank", "additive")

Hidden = Union[Tensor, Tuple[Tensor, Tensor]]


def _build(cls, *args, backend: Optional[str] = None, **kw):
    # Pass backend= only when asked for, so the blocks also run on modules that predate it.
    if backend is not None:
        kw["backend"] = backend
    return cls(*args, **kw)


def _describe(x) -> str:
    if isinstance(x, torch.Tensor):
        return f"a {x.dtype} tensor of shape {list(x.shape)}"
    return f"a {type(x).__name__}"


def _check_positive(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _check_cell(cell: str) -> str:
    if not isinstance(cell, str) or cell.lower() not in CELLS:
        raise ValueError(f"cell must be one of {CELLS}, got {cell!r}")
    return cell.lower()


def _check_tokens(t, name: str, ndim: int, vocab_size: int) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype != torch.long:
        raise TypeError(f"{name} must be a LongTensor of token ids, got dtype {t.dtype}")
    if t.dim() != ndim:
        want = "[B, S]" if ndim == 2 else "[B]"
        raise ValueError(f"{name} must have shape {want}, got {list(t.shape)}")
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= vocab_size):
        raise ValueError(f"{name} holds ids in [{int(t.min())}, {int(t.max())}], "
                         f"outside the vocabulary [0, {vocab_size})")


class TokenEmbedding(nn.Module):
    """Token embeddings [V,E], optionally loaded from a matrix and frozen.

    When frozen, rows ``num_special`` and above live in a buffer (no optimizer, weight decay or
    momentum can move them) and the first ``num_special`` rows (pad/bos/eos/unk...) stay a
    learned parameter ``special``.
    """

    def __init__(self, vocab_size: int, embed_dim: int, padding_idx: Optional[int] = 0,
                 embeddings: Optional[Tensor] = None, freeze: bool = False, num_special: int = 0):
        super().__init__()
        _check_positive("vocab_size", vocab_size)
        _check_positive("embed_dim", embed_dim)
        if padding_idx is not None and not 0 <= padding_idx < vocab_size:
            raise ValueError(f"padding_idx must lie in [0, {vocab_size}) or be None, got {padding_idx}")
        if not isinstance(num_special, int) or not 0 <= num_special <= vocab_size:
            raise ValueError(f"num_special must be an int in [0, {vocab_size}], got {num_special!r}")
        self.vocab_size, self.embed_dim = vocab_size, embed_dim
        self.padding_idx, self.num_special, self.frozen = padding_idx, num_special, bool(freeze)
        if embeddings is not None:
            if not isinstance(embeddings, torch.Tensor) or not embeddings.is_floating_point():
                raise TypeError("embeddings must be a floating-point torch.Tensor of shape "
                                f"[{vocab_size}, {embed_dim}], got {_describe(embeddings)}")
            if embeddings.shape != (vocab_size, embed_dim):
                raise ValueError(f"embeddings must have shape [{vocab_size}, {embed_dim}] "
                                 f"(vocab_size, embed_dim), got {list(embeddings.shape)}")
            init = embeddings.detach().clone().float()
        else:
            init = torch.randn(vocab_size, embed_dim)
            if padding_idx is not None:
                init[padding_idx] = 0
        if self.frozen:
            self.special = nn.Parameter(init[:num_special].clone())
            self.register_buffer("fixed", init[num_special:].clone())
            self.weight = None
        else:
            self.weight = nn.Parameter(init)

    def full_weight(self) -> Tensor:
        """The whole [V,E] table (a copy when frozen)."""
        if self.weight is not None:
            return self.weight
        return torch.cat([self.special, self.fixed], 0)

    def forward(self, ids: Tensor) -> Tensor:
        if self.weight is not None:
            return F.embedding(ids, self.weight, self.padding_idx)
        if self.num_special == 0:
            return F.embedding(ids, self.fixed)
        if self.num_special == self.vocab_size:
            return F.embedding(ids, self.special, self.padding_idx)
        # Two small lookups and a select instead of concatenating the [V,E] table per call.
        ns = self.num_special
        fixed = F.embedding((ids - ns).clamp_(min=0), self.fixed)
        pad = self.padding_idx if self.padding_idx is not None and self.padding_idx < ns else None
        special = F.embedding(ids.clamp(max=ns - 1), self.special, pad)
        return torch.where((ids < ns).unsqueeze(-1), special, fixed)

    def project(self, x: Tensor, bias: Optional[Tensor]) -> Tensor:
        """x [...,E] -> logits [...,V] = x @ table^T + bias (the tied output projection)."""
        if self.weight is not None:
            return linear(x, self.weight, bias)
        if self.num_special == 0:
            return linear(x, self.fixed, bias)
        out = torch.cat([linear(x, self.special), linear(x, self.fixed)], -1)
        return out if bias is None else out + bias

    def extra_repr(self) -> str:
        s = f"{self.vocab_size}, {self.embed_dim}, padding_idx={self.padding_idx}"
        if self.frozen:
            s += f", frozen=True, num_special={self.num_special}"
        return s


class EncoderOutput(NamedTuple):
    """states [B,S,M] (zero at padding), mask [B,S] bool (True = real token), and the decoder's
    initial state: [L_dec,B,H_dec] (GRU) or a tuple (h, c) of those (LSTM)."""
    states: Tensor
    mask: Tensor
    hidden: Optional[Hidden]


class Encoder(nn.Module):
    """Embeddings + a multi-layer, optionally bidirectional fastrnn GRU/LSTM + a bridge.

    hidden_size is per direction; ``output_size`` = hidden_size * num_directions. The bridge maps
    the final states of every layer and direction, concatenated, through linear+tanh to the
    decoder's initial state [dec_num_layers, B, dec_hidden_size] (for an LSTM, h and c each get
    their own bridge). dec_hidden_size defaults to output_size, dec_num_layers to num_layers.
    """

    def __init__(self, vocab_size: int, embed_dim: int, hidden_size: int, num_layers: int = 1,
                 cell: str = "gru", bidirectional: bool = True, dropout: float = 0.0,
                 padding_idx: Optional[int] = 0, embeddings: Optional[Tensor] = None,
                 freeze_embeddings: bool = False, num_special: int = 0,
                 dec_hidden_size: Optional[int] = None, dec_num_layers: Optional[int] = None,
                 backend: Optional[str] = None):
        super().__init__()
        _check_positive("hidden_size", hidden_size)
        _check_positive("num_layers", num_layers)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        self.cell = _check_cell(cell)
        self.vocab_size, self.embed_dim, self.hidden_size = vocab_size, embed_dim, hidden_size
        self.num_layers, self.bidirectional = num_layers, bool(bidirectional)
        self.num_directions = 2 if bidirectional else 1
        self.output_size = hidden_size * self.num_directions
        self.dec_hidden_size = dec_hidden_size if dec_hidden_size is not None else self.output_size
        self.dec_num_layers = dec_num_layers if dec_num_layers is not None else num_layers
        _check_positive("dec_hidden_size", self.dec_hidden_size)
        _check_positive("dec_num_layers", self.dec_num_layers)
        self.padding_idx = padding_idx
        self.embed = TokenEmbedding(vocab_size, embed_dim, padding_idx, embeddings,
                                    freeze_embeddings, num_special)
        self.drop = nn.Dropout(dropout)
        rnn_cls = GRU if self.cell == "gru" else LSTM
        self.rnn = _build(rnn_cls, embed_dim, hidden_size, num_layers, batch_first=True,
                          dropout=dropout if num_layers > 1 else 0.0,
                          bidirectional=self.bidirectional, backend=backend)
        n_final = num_layers * self.num_directions * hidden_size
        n_dec = self.dec_num_layers * self.dec_hidden_size
        self.bridge = nn.Linear(n_final, n_dec)
        self.bridge_c = nn.Linear(n_final, n_dec) if self.cell == "lstm" else None

    def _bridge(self, final: Tensor, linear: nn.Linear) -> Tensor:
        # final [L*D,B,H] -> [B, L*D*H] -> [L_dec, B, H_dec]
        B = final.shape[1]
        x = torch.tanh(linear(final.transpose(0, 1).reshape(B, -1)))
        return x.view(B, self.dec_num_layers, self.dec_hidden_size).transpose(0, 1).contiguous()

    def forward(self, src: Tensor, lengths: Tensor) -> EncoderOutput:
        _check_tokens(src, "src", 2, self.vocab_size)
        B, S = src.shape
        if B == 0 or S == 0:
            raise ValueError(f"src must have B > 0 and S > 0, got shape {list(src.shape)}")
        lengths = _check_lengths(lengths, B, S)
        x = self.drop(self.embed(src))
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, final = self.rnn(packed)
        states, _ = pad_packed_sequence(out, batch_first=True, total_length=S)
        mask = torch.arange(S, device=src.device).unsqueeze(0) < lengths.to(src.device).unsqueeze(1)
        if self.cell == "gru":
            hidden = self._bridge(final, self.bridge)
        else:
            hidden = (self._bridge(final[0], self.bridge), self._bridge(final[1], self.bridge_c))
        return EncoderOutput(states, mask, hidden)

    def extra_repr(self) -> str:
        return (f"cell={self.cell!r}, output_size={self.output_size}, "
                f"dec_num_layers={self.dec_num_layers}, dec_hidden_size={self.dec_hidden_size}")


def _check_lengths(lengths, B: int, S: int) -> Tensor:
    if not isinstance(lengths, torch.Tensor):
        raise TypeError(f"lengths must be a LongTensor of shape [{B}], got {type(lengths).__name__}")
    if lengths.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"lengths must be an integer tensor of shape [{B}], got dtype {lengths.dtype}")
    if lengths.shape != (B,):
        raise ValueError(f"lengths must have shape [{B}] (src's batch size), got {list(lengths.shape)}")
    lo, hi = int(lengths.min()), int(lengths.max())
    if lo < 1 or hi > S:
        raise ValueError(f"lengths must lie in [1, {S}] (S = src.size(1)), got values in [{lo}, {hi}]")
    return lengths.long()


class DecoderState(NamedTuple):
    """What ``AttentionDecoder.step`` carries from one token to the next.

    hidden: per layer [B,H]; cell: per layer [B,H] (LSTM) or None; feed: the previous
    attentional vector [B,O] (input feeding) or None; memory: the source as the attention keeps
    it (keys, mask, projected keys), or None without attention; src_mask [B,S].
    """
    hidden: Tuple[Tensor, ...]
    cell: Optional[Tuple[Tensor, ...]]
    feed: Optional[Tensor]
    memory: Optional[AttentionMemory]
    src_mask: Tensor

    def reorder(self, index: Tensor) -> "DecoderState":
        """Rows ``index`` of the recurrent parts (beam search). The memory is left as it is, so
        ``index`` must keep every row within its own sentence's block of rows."""
        return self._replace(
            hidden=tuple(h.index_select(0, index) for h in self.hidden),
            cell=None if self.cell is None else tuple(c.index_select(0, index) for c in self.cell),
            feed=None if self.feed is None else self.feed.index_select(0, index))

    def select(self, index: Tensor) -> "DecoderState":
        """Rows ``index`` of everything, the source's memory and mask too: the state of a subset
        of the sentences (greedy decoding drops the finished ones)."""
        def sel(t):
            return None if t is None else t.index_select(0, index)

        mem = None if self.memory is None else AttentionMemory(*(sel(t) for t in self.memory))
        return self.reorder(index)._replace(memory=mem, src_mask=sel(self.src_mask))

    def repeat_interleave(self, k: int) -> "DecoderState":
        """Each sentence's row repeated k times (rows b*k .. b*k+k-1): the start of a beam."""
        def rep(t):
            return None if t is None else t.repeat_interleave(k, dim=0)

        mem = None if self.memory is None else AttentionMemory(*(rep(t) for t in self.memory))
        return DecoderState(tuple(rep(h) for h in self.hidden),
                            None if self.cell is None else tuple(rep(c) for c in self.cell),
                            rep(self.feed), mem, rep(self.src_mask))


class AttentionDecoder(nn.Module):
    """Stacked GRU/LSTM cells + attention (any kind, or None) + input feeding + output projection.

    ``forward`` (teacher forcing) and ``step`` run the same per-token computation, so they give
    the same logits. Dropout (training only) acts on the embeddings, between layers and on the
    attentional vector before the output projection. With ``tie_embeddings`` the output
    projection uses the embedding table (and the attentional vector has size embed_dim).
    With attention=None, ``attn`` is None everywhere.
    """

    def __init__(self, vocab_size: int, embed_dim: int, hidden_size: int, memory_size: int,
                 num_layers: int = 1, cell: str = "gru", attention: Optional[str] = "general",
                 attention_hidden: Optional[int] = None, rank: Optional[int] = None,
                 input_feeding: bool = True, dropout: float = 0.0,
                 embeddings: Optional[Tensor] = None, freeze_embeddings: bool = False,
                 num_special: int = 0, tie_embeddings: bool = False, padding_idx: Optional[int] = 0,
                 backend: Optional[str] = None):
        super().__init__()
        _check_positive("hidden_size", hidden_size)
        _check_positive("memory_size", memory_size)
        _check_positive("num_layers", num_layers)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        if attention is not None and attention not in ATTENTION_KINDS:
            raise ValueError(f"attention must be one of {ATTENTION_KINDS} or None, got {attention!r}")
        self.cell = _check_cell(cell)
        # The linear layers (fastrnn.ops.linear) follow backend='reference'; others pick freely.
        self._linear_backend = "reference" if backend == "reference" else None
        self.vocab_size, self.embed_dim, self.hidden_size = vocab_size, embed_dim, hidden_size
        self.memory_size, self.num_layers = memory_size, num_layers
        self.attention_kind, self.input_feeding = attention, bool(input_feeding)
        self.tie_embeddings, self.padding_idx = bool(tie_embeddings), padding_idx
        self.output_size = embed_dim if tie_embeddings else hidden_size
        self.embed = TokenEmbedding(vocab_size, embed_dim, padding_idx, embeddings,
                                    freeze_embeddings, num_special)
        self.drop = nn.Dropout(dropout)
        self.dropout = dropout
        cell_cls = GRUCell if self.cell == "gru" else LSTMCell
        in0 = embed_dim + (self.output_size if self.input_feeding else 0)
        self.cells = nn.ModuleList(
            [_build(cell_cls, in0 if l == 0 else hidden_size, hidden_size, backend=backend)
             for l in range(num_layers)])
        if attention is not None:
            self.attn = _build(Attention, hidden_size, memory_size, kind=attention,
                               hidden_size=attention_hidden, rank=rank, backend=backend)
            self.combine = nn.Linear(memory_size + hidden_size, self.output_size, bias=False)
        else:
            self.attn = None
            self.combine = (nn.Linear(hidden_size, self.output_size, bias=False)
                            if self.output_size != hidden_size else None)
        if self.tie_embeddings:
            self.out = None
            self.out_bias = nn.Parameter(torch.zeros(vocab_size))
        else:
            self.out = nn.Linear(self.output_size, vocab_size)
            self.out_bias = None

    # -- state -------------------------------------------------------------------------------
    def init_state(self, enc_out: EncoderOutput) -> DecoderState:
        """The state before the first token: the encoder's bridged hidden state (zeros when it
        is None), a zero input feed, and the attention memory (keys projected once here)."""
        if not isinstance(enc_out, tuple) or len(enc_out) != 3:
            raise TypeError("enc_out must be an EncoderOutput(states, mask, hidden), "
                            f"got {type(enc_out).__name__}")
        states, mask, hidden = enc_out
        if not isinstance(states, torch.Tensor) or states.dim() != 3 or states.shape[2] != self.memory_size:
            raise ValueError(f"enc_out.states must have shape [B, S, {self.memory_size}] "
                             f"(memory_size), got {list(getattr(states, 'shape', []))}")
        B, S, _ = states.shape
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.shape != (B, S):
            raise ValueError(f"enc_out.mask must be a bool tensor of shape [{B}, {S}], got {_describe(mask)}")
        L, H = self.num_layers, self.hidden_size
        zeros = states.new_zeros(L, B, H)
        if hidden is None:
            h0, c0 = zeros, (zeros if self.cell == "lstm" else None)
        elif self.cell == "lstm":
            if not isinstance(hidden, (tuple, list)) or len(hidden) != 2:
                raise TypeError("an LSTM decoder needs enc_out.hidden = (h, c) (build the Encoder "
                                f"with cell='lstm'), got {type(hidden).__name__}")
            h0, c0 = hidden
        else:
            if not isinstance(hidden, torch.Tensor):
                raise TypeError("a GRU decoder needs enc_out.hidden as one tensor [L, B, H] (build the "
                                f"Encoder with cell='gru'), got {type(hidden).__name__}")
            h0, c0 = hidden, None
        for t, name in ((h0, "hidden"), (c0, "hidden[1] (c)")):
            if t is not None and tuple(t.shape) != (L, B, H):
                raise ValueError(f"enc_out.{name} must have shape [{L}, {B}, {H}] (decoder num_layers, "
                                 f"B, hidden_size; set the Encoder's dec_num_layers/dec_hidden_size), "
                                 f"got {list(t.shape)}")
        h0 = h0.to(states.dtype)
        memory = self.attn.precompute(states, None, mask) if self.attn is not None else None
        feed = states.new_zeros(B, self.output_size) if self.input_feeding else None
        return DecoderState(tuple(h0.unbind(0)),
                            None if c0 is None else tuple(c0.to(states.dtype).unbind(0)),
                            feed, memory, mask)

    # -- one token ---------------------------------------------------------------------------
    def _advance(self, emb: Tensor, state: DecoderState):
        """emb [B,E] (dropout applied) -> attentional vector o [B,O], new state, weights [B,S]."""
        x = emb if state.feed is None else torch.cat([emb, state.feed], 1)
        hs, cs = [], []
        last = self.num_layers - 1
        drop = self.training and self.dropout > 0
        for l, cell in enumerate(self.cells):
            if state.cell is None:
                h = cell(x, state.hidden[l])
            else:
                h, c = cell(x, (state.hidden[l], state.cell[l]))
                cs.append(c)
            hs.append(h)
            x = self.drop(h) if drop and l < last else h
        w = None
        if self.attn is not None:
            ctx, w = self.attn(h, memory=state.memory)
            o = linear_cat(ctx, h, self.combine.weight, tanh=True, backend=self._linear_backend)
        elif self.combine is not None:
            o = torch.tanh(linear(h, self.combine.weight, backend=self._linear_backend))
        else:
            o = h
        new = DecoderState(tuple(hs), tuple(cs) if cs else None,
                           o if self.input_feeding else None, state.memory, state.src_mask)
        return o, new, w

    def _dropout(self, x: Tensor) -> Tensor:
        # Skipping the module call at inference keeps the per-token path short.
        return self.drop(x) if self.training and self.dropout > 0 else x

    def output_layer(self, features: Tensor) -> Tensor:
        """features [...,O] (``forward(..., features_only=True)``'s) -> logits [...,V]: dropout in
        training, then the output projection (free, or tied to the embeddings). Projecting only
        the rows that are scored (no padding) saves the vocabulary-sized product for the rest."""
        if not isinstance(features, torch.Tensor) or features.dim() < 1 or features.shape[-1] != self.output_size:
            raise ValueError(f"features must be a tensor of shape [..., {self.output_size}], got "
                             f"{_describe(features)}")
        return self._project(features)

    def _project(self, o: Tensor) -> Tensor:
        o = self._dropout(o)
        if self.out is not None:
            return linear(o, self.out.weight, self.out.bias, backend=self._linear_backend)
        return self.embed.project(o, self.out_bias)

    def step(self, tokens: Tensor, state: DecoderState):
        """tokens [B] long -> logits [B,V], the next state, attention weights [B,S] (or None)."""
        if not isinstance(tokens, torch.Tensor) or tokens.dim() != 1:
            raise ValueError(f"tokens must be a LongTensor of shape [B], got {_describe(tokens)}")
        o, state, w = self._advance(self._dropout(self.embed(tokens)), state)
        return self._project(o), state, w

    # -- teacher forcing ---------------------------------------------------------------------
    def forward(self, tgt_in: Tensor, enc_out: EncoderOutput, features_only: bool = False):
        """tgt_in [B,T] long (BOS first) -> logits [B,T,V], attention weights [B,T,S] (or None).

        ``features_only=True`` returns the output layer's inputs [B,T,O] instead of the logits
        (O = ``output_size``); ``output_layer`` turns any selection of them into logits, e.g.
        only the positions that are not padding: ``dec.output_layer(feats[tgt_out != pad])``."""
        if not isinstance(features_only, bool):
            raise TypeError(f"features_only must be a bool, got {type(features_only).__name__}")
        _check_tokens(tgt_in, "tgt_in", 2, self.vocab_size)
        state = self.init_state(enc_out)
        B, T = tgt_in.shape
        if B != state.src_mask.shape[0]:
            raise ValueError(f"tgt_in has batch size {B} but enc_out has {state.src_mask.shape[0]}")
        emb = self._dropout(self.embed(tgt_in))                  # one lookup for all T
        outs, ws = [], []
        for t in range(T):
            o, state, w = self._advance(emb[:, t], state)
            outs.append(o)
            ws.append(w)
        feats = torch.stack(outs, 1)
        attn = torch.stack(ws, 1) if self.attn is not None else None
        if features_only:
            return feats, attn
        # One output projection over all B*T rows instead of T small ones.
        return self._project(feats), attn

    def extra_repr(self) -> str:
        return (f"cell={self.cell!r}, attention={self.attention_kind!r}, "
                f"input_feeding={self.input_feeding}, tie_embeddings={self.tie_embeddings}")


__all__ = ["Encoder", "EncoderOutput", "AttentionDecoder", "DecoderState", "TokenEmbedding"]
