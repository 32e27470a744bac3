"""Batched decoding with an ``Encoder`` + ``AttentionDecoder``: greedy and beam search.

    res = greedy_decode(enc, dec, src [B,S], lengths [B], bos, eos, max_len_a=1.5, max_len_b=5)
    res = beam_search(enc, dec, src, lengths, bos, eos, beam_size=4, alpha=0.6, ...)
    -> DecodeResult(tokens [B,L] long, lengths [B], scores [B], attention [B,L,S] or None)
    beam_search(..., alpha=[0.6, 1.0, 2.0]) -> one DecodeResult per alpha, from one search

Each sentence may produce at most ceil(max_len_a * src_len + max_len_b) tokens. The returned
tokens exclude BOS and EOS; positions after a sentence's last token hold the decoder's
padding_idx (attention rows there are zero); padding_idx itself is never produced (its
log-probability is set to -inf after the softmax, so the scores stay the model's log-probs).
Scores are summed log-probabilities of every produced token, EOS included when it was
produced; beam search divides them by the GNMT length penalty ((5 + n) / 6) ** alpha,
n = number of produced tokens including EOS. Both run under
torch.inference_mode and leave the modules' train/eval mode alone: call .eval() first.
"""
from __future__ import annotations

import itertools
import math
import weakref
from collections import OrderedDict
from typing import NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from fastrnn.ops.decode import greedy_update


def _check_every(device: torch.device) -> int:
    # "Is any sentence still running?" is a host sync: on a GPU, asking every step would stall
    # the launch queue, so ask every 8 steps (finished rows cost a few wasted steps at most).
    return 8 if device.type == "cuda" else 1


class DecodeResult(NamedTuple):
    tokens: Tensor
    lengths: Tensor
    scores: Tensor
    attention: Optional[Tensor]


def length_penalty(n, alpha: float):
    """GNMT's ((5 + n) / 6) ** alpha for n produced tokens (EOS included)."""
    if isinstance(n, Tensor):
        return ((5.0 + n.double()) / 6.0).pow(alpha)
    return ((5.0 + n) / 6.0) ** alpha


def max_lengths(lengths: Tensor, max_len_a: float, max_len_b: float) -> Tensor:
    """ceil(a * src_len + b) per sentence, at least 1. The 1e-9 keeps a product such as
    1.1 * 10 = 11.000000000000002 from rounding up to 12."""
    m = torch.ceil(lengths.double() * max_len_a + max_len_b - 1e-9).long()
    return m.clamp(min=1)


def _check_args(enc, dec, src, lengths, bos, eos, max_len_a, max_len_b):
    from fastrnn.nn.seq2seq import AttentionDecoder, Encoder

    if not isinstance(enc, Encoder):
        raise TypeError(f"enc must be a fastrnn.Encoder, got {type(enc).__name__}")
    if not isinstance(dec, AttentionDecoder):
        raise TypeError(f"dec must be a fastrnn.AttentionDecoder, got {type(dec).__name__}")
    V = dec.vocab_size
    for name, tok in (("bos", bos), ("eos", eos)):
        if not isinstance(tok, int) or isinstance(tok, bool) or not 0 <= tok < V:
            raise ValueError(f"{name} must be an int token id in [0, {V}), got {tok!r}")
    for name, x in (("max_len_a", max_len_a), ("max_len_b", max_len_b)):
        if not isinstance(x, (int, float)) or not math.isfinite(x) or x < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {x!r}")
    if not isinstance(src, Tensor) or src.dim() != 2:
        raise ValueError(f"src must be a LongTensor of shape [B, S], got "
                         f"{list(src.shape) if isinstance(src, Tensor) else type(src).__name__}")
    if not isinstance(lengths, Tensor) or lengths.shape != (src.shape[0],):
        raise ValueError(f"lengths must be a LongTensor of shape [{src.shape[0]}], got "
                         f"{list(lengths.shape) if isinstance(lengths, Tensor) else type(lengths).__name__}")


def _clone_state(state, everything: bool):
    """Own copies of the tensors a step writes (hidden, cell, feed); with ``everything``, of the
    source's too (memory, src_mask), for buffers that later batches are copied into."""
    def cl(t):
        return None if t is None else t.clone()

    mem = state.memory
    out = state._replace(
        hidden=tuple(h.clone() for h in state.hidden),
        cell=None if state.cell is None else tuple(c.clone() for c in state.cell),
        feed=cl(state.feed))
    if everything:
        out = out._replace(memory=None if mem is None else type(mem)(*(cl(t) for t in mem)),
                           src_mask=state.src_mask.clone())
    return out


def _state_tensors(state):
    """Every tensor of a DecoderState in a fixed order (None where a field is None)."""
    out = list(state.hidden)
    out += list(state.cell) if state.cell is not None else [None]
    out.append(state.feed)
    out += list(state.memory) if state.memory is not None else [None]
    out.append(state.src_mask)
    return out


# Greedy decoding (without a CUDA graph) drops the finished sentences from the batch once at most
# this fraction of its rows is still running: in a batch of verses, half of the row-steps up to
# the longest output were spent on finished rows.
COMPACT_AT = 0.75
_ROW_BUFFERS = ("maxlen", "prev", "tokens", "attn", "scores", "out_len", "alive")


class _Greedy:
    """Greedy decoding's running state in fixed buffers that ``step`` updates in place (the
    decoder state too, the step index as a device tensor), so that one step can be captured as a
    CUDA graph and replayed for every later token. ``load`` puts a new batch into the same
    buffers, so a captured step serves every later batch of the same shapes (``_GRAPHS``).
    Holds no reference to the decoder (the graph cache is keyed weakly on it)."""

    def __init__(self, state, maxlen: Tensor, L: int, bos: int, eos: int, pad: int, S: int,
                 adtype, has_attn: bool, reusable: bool = False):
        B, dev = maxlen.shape[0], maxlen.device
        self.bos, self.eos, self.pad = bos, eos, pad
        # The step writes the state in place: own copies, never views of the encoder's output
        # (the source's too when later batches are loaded into these buffers).
        self.state = _clone_state(state, everything=reusable)
        self.reusable = reusable
        self.maxlen = maxlen.clone()
        self.prev = torch.full((B,), bos, dtype=torch.long, device=dev)
        self.t = torch.zeros(1, dtype=torch.long, device=dev)
        self.t_next = torch.zeros(1, dtype=torch.long, device=dev)
        self.tokens = torch.full((B, L), pad, dtype=torch.long, device=dev)
        self.attn = torch.zeros(B, L, S, dtype=adtype, device=dev) if has_attn else None
        self.scores = torch.zeros(B, dtype=torch.float32, device=dev)
        self.out_len = torch.zeros(B, dtype=torch.long, device=dev)
        self.alive = torch.ones(B, dtype=torch.bool, device=dev)
        self.graph = None

    def load(self, state, maxlen: Tensor) -> None:
        """A new batch of the same shapes into the buffers, and every counter back to its start."""
        for mine, new in zip(_state_tensors(self.state), _state_tensors(state)):
            if mine is not None:
                mine.copy_(new)
        self.maxlen.copy_(maxlen)
        self.prev.fill_(self.bos)
        self.t.zero_()
        # tokens and attn need no reset: step t writes column t of every row, and the result
        # keeps only the columns of steps that ran.
        self.scores.zero_()
        self.out_len.zero_()
        self.alive.fill_(True)

    def _one(self, dec, state):
        """One token: the decoder's step from ``state``, then the bookkeeping (one fused kernel,
        fastrnn.ops.decode.greedy_update); returns the decoder's new state."""
        logits, new, w = dec.step(self.prev, state)
        greedy_update(logits, w if self.attn is not None else None, self.t, self.pad, self.eos, self.maxlen,
                      self.alive, self.tokens, self.scores, self.out_len, self.prev, self.attn, t_next=self.t_next)
        self.t, self.t_next = self.t_next, self.t      # the kernel wrote t + 1 into the other buffer
        return new

    def steps(self, dec, k: int) -> None:
        """k tokens; the decoder state is written back into the fixed buffers once, at the end."""
        st = self.state
        for _ in range(k):
            st = self._one(dec, st)
        for old, cur in zip(self.state.hidden, st.hidden):
            old.copy_(cur)
        if self.state.cell is not None:
            for old, cur in zip(self.state.cell, st.cell):
                old.copy_(cur)
        if self.state.feed is not None:
            self.state.feed.copy_(st.feed)

    def capture(self, dec, state, maxlen: Tensor) -> None:
        """Record GRAPH_BUCKET steps as one CUDA graph. They run once eagerly on a side stream
        first (a graph's warm-up: it sets up the library handles and the allocator's pool), then
        are captured (capturing runs nothing), then the batch is loaded again from the start."""
        dev = self.prev.device
        side = torch.cuda.Stream(device=dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(side):
            self.steps(dec, GRAPH_BUCKET)
        torch.cuda.current_stream(dev).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.steps(dec, GRAPH_BUCKET)
        self.graph = graph
        self.load(state, maxlen)

    def run(self, dec, L: int, every: int) -> None:
        """L steps, stopping early (checked every ``every`` steps) once no sentence is running.
        With a captured graph, each replay runs GRAPH_BUCKET steps (L rounded up: the steps past
        a row's maximum length leave it unchanged) and the check comes between replays."""
        if self.graph is not None:
            for i in range(-(-L // GRAPH_BUCKET)):
                if i and not bool(self.alive.any()):
                    break
                self.graph.replay()
            return
        state, full, rows = self.state, None, None
        for t in range(L):
            if t and t % every == 0:
                n = int(self.alive.sum())
                if n == 0:
                    break
                if n <= COMPACT_AT * self.alive.shape[0]:
                    # Most sentences have finished: go on with the running ones only, so that
                    # the steps (the vocabulary-sized product above all) cost what they produce.
                    if full is None:
                        full = {k: getattr(self, k) for k in _ROW_BUFFERS}
                    rows, state = self._compact(full, rows, state)
            state = self._one(dec, state)
        if full is not None:
            self._write_back(full, rows)
            for k, v in full.items():
                setattr(self, k, v)
        self.state = state

    def _write_back(self, full: dict, rows: Tensor) -> None:
        for k in _ROW_BUFFERS:
            if full[k] is not None:
                full[k].index_copy_(0, rows, getattr(self, k))

    def _compact(self, full: dict, rows: Optional[Tensor], state):
        """Keep the rows still running: their bookkeeping becomes the working buffers, the others'
        is written back into ``full`` (the batch's buffers, which ``run`` restores at the end)."""
        keep = self.alive.nonzero().squeeze(1)
        if rows is not None:
            self._write_back(full, rows)
            rows = rows.index_select(0, keep)
        else:
            rows = keep
        for k in _ROW_BUFFERS:
            v = getattr(self, k)
            setattr(self, k, None if v is None else v.index_select(0, keep))
        return rows, state.select(keep)

    def result(self, S: int) -> DecodeResult:
        """The decoded batch; attention over the first S source positions (the others are the
        padding of a shared graph)."""
        n = int(self.out_len.max()) if self.out_len.numel() else 0
        # a kept graph's buffers are overwritten by the next batch: the caller gets copies
        own = (lambda t: t.clone()) if self.reusable else (lambda t: t.contiguous())
        return DecodeResult(own(self.tokens[:, :n]), own(self.out_len), own(self.scores),
                            own(self.attn[:, :n, :S]) if self.attn is not None else None)


# Captured greedy steps, per decoder (weakly: a decoder that goes away takes its graphs with
# it), most recently used last. A graph reads its buffers and the decoder's weights at the
# addresses it was captured with, so the key holds every shape, dtype, constant and weight
# address the step depends on: in-place weight updates (an optimizer's step, load_state_dict)
# are seen by the next replay, and replaced weights (.to(), a new Parameter) make a new key.
_GRAPHS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
MAX_CUDA_GRAPHS = 16  # per decoder; each holds its batch's buffers and its step's memory pool
GRAPH_BUCKET = 8      # source positions and output tokens are rounded up to multiples of this;
# also the steps one replay runs: an even number, so that the two step-index buffers (t, t_next)
# are back in place at the end of every replay


def clear_cuda_graphs(dec=None) -> None:
    """Drop the CUDA graphs greedy_decode(cuda_graph=True) keeps for ``dec`` (all when None)."""
    if dec is None:
        _GRAPHS.clear()
    else:
        _GRAPHS.pop(dec, None)


def _graph_key(dec, state, maxlen: Tensor, L: int, bos: int, eos: int, pad: int) -> tuple:
    def sig(t):
        return None if t is None else (tuple(t.shape), t.dtype, t.device)

    weights = tuple((t.data_ptr(), tuple(t.shape), t.dtype)
                    for t in itertools.chain(dec.parameters(), dec.buffers()))
    return (tuple(sig(t) for t in _state_tensors(state)), sig(maxlen), L, bos, eos, pad,
            dec.training, torch.is_autocast_enabled("cuda"), weights)


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def _pad_source(enc_out, S_to: int):
    """The encoder's output with S_to - S source positions added: zero states, masked out. The
    attention gives them weight 0, so every step's result is that of the unpadded source."""
    states, mask, hidden = enc_out
    extra = S_to - mask.shape[1]
    if extra == 0:
        return enc_out
    states = torch.cat([states, states.new_zeros(states.shape[0], extra, states.shape[2])], 1)
    mask = torch.cat([mask, mask.new_zeros(mask.shape[0], extra)], 1)
    from fastrnn.nn.seq2seq import EncoderOutput

    return EncoderOutput(states, mask, hidden)


def _greedy(dec, enc_out, lengths: Tensor, bos: int, eos: int, max_len_a: float, max_len_b: float,
            cuda_graph: bool = False) -> DecodeResult:
    """greedy_decode from the encoder's output (the decode benchmark times this)."""
    B, S = enc_out.mask.shape
    dev = enc_out.states.device
    maxlen = max_lengths(lengths, max_len_a, max_len_b).to(dev)
    pad = dec.padding_idx if dec.padding_idx is not None else 0
    L = int(maxlen.max()) if B else 0
    has_attn, adtype = dec.attn is not None, enc_out.states.dtype
    if not cuda_graph or L == 0:
        g = _Greedy(dec.init_state(enc_out), maxlen, L, bos, eos, pad, S, adtype, has_attn)
    else:
        # Batches of nearby shapes share a graph: the source is padded (masked) to a multiple of
        # GRAPH_BUCKET positions and the buffers hold a multiple of GRAPH_BUCKET tokens (the loop
        # still stops after L steps).
        S_b, L_b = _round_up(S, GRAPH_BUCKET), _round_up(L, GRAPH_BUCKET)
        state = dec.init_state(_pad_source(enc_out, S_b))
        graphs = _GRAPHS.setdefault(dec, OrderedDict())
        key = _graph_key(dec, state, maxlen, L_b, bos, eos, pad)
        g = graphs.pop(key, None)
        if g is None:
            g = _Greedy(state, maxlen, L_b, bos, eos, pad, S_b, adtype, has_attn, reusable=True)
            g.capture(dec, state, maxlen)
            while len(graphs) >= MAX_CUDA_GRAPHS:
                graphs.popitem(last=False)
        else:
            g.load(state, maxlen)
        graphs[key] = g
    g.run(dec, L, _check_every(dev))
    return g.result(S)


@torch.inference_mode()
def greedy_decode(enc, dec, src: Tensor, lengths: Tensor, bos: int, eos: int,
                  max_len_a: float = 1.5, max_len_b: float = 5, cuda_graph: bool = False) -> DecodeResult:
    """Pick the most probable token at each step; scores are raw summed log-probabilities.

    ``cuda_graph=True`` (CUDA tensors only) runs 8 tokens per replay of a CUDA graph (one launch
    instead of one per kernel); the tokens are the same as without it. The graph is
    captured on the first call for a batch shape (B, and S and the maximum length each rounded up
    to a multiple of 8: the source is padded with masked positions) and kept with the decoder (up
    to ``MAX_CUDA_GRAPHS`` shapes, least recently used dropped first), so later calls of that
    shape only replay it; weights updated in place are seen, replaced weights are captured anew.
    ``fastrnn.clear_cuda_graphs(dec)`` frees them."""
    _check_args(enc, dec, src, lengths, bos, eos, max_len_a, max_len_b)
    if not isinstance(cuda_graph, bool):
        raise TypeError(f"cuda_graph must be a bool, got {type(cuda_graph).__name__}")
    if cuda_graph and src.device.type != "cuda":
        raise ValueError(f"cuda_graph=True needs CUDA tensors, got src on {src.device}")
    return _greedy(dec, enc(src, lengths), lengths, bos, eos, max_len_a, max_len_b, cuda_graph)


@torch.inference_mode()
def beam_search(enc, dec, src: Tensor, lengths: Tensor, bos: int, eos: int, beam_size: int = 4,
                alpha: Union[float, Sequence[float]] = 0.6, max_len_a: float = 1.5,
                max_len_b: float = 5) -> Union[DecodeResult, Tuple[DecodeResult, ...]]:
    """Batched beam search with the GNMT length penalty; returns each sentence's best hypothesis.

    Per step, each sentence ranks its k*V extensions and takes the best 2k: the EOS ones among
    the first k become finished hypotheses, the first k non-EOS ones form the next beam. A
    sentence stops after k finished hypotheses or at its maximum length (where its k best
    extensions all finish). Scores are length-normalised: log-prob / ((5 + n) / 6) ** alpha.

    The search itself does not depend on alpha, only the choice among its finished hypotheses.
    So ``alpha`` may be a sequence: one search then returns a tuple with a DecodeResult per
    alpha, each the same as ``beam_search(..., alpha=a)`` (tuning alpha on a dev set costs one
    decoding, not one per value).
    """
    _check_args(enc, dec, src, lengths, bos, eos, max_len_a, max_len_b)
    if not isinstance(beam_size, int) or isinstance(beam_size, bool) or beam_size < 1:
        raise ValueError(f"beam_size must be a positive int, got {beam_size!r}")
    V = dec.vocab_size
    k = beam_size
    if 2 * k > V:
        raise ValueError(f"beam_size must be at most vocab_size / 2 = {V // 2}, got {k}")
    many = isinstance(alpha, (list, tuple))
    alphas = list(alpha) if many else [alpha]
    if many and not alphas:
        raise ValueError("alpha must be a number or a non-empty sequence of numbers, got []")
    for a in alphas:
        if not isinstance(a, (int, float)) or isinstance(a, bool) or not math.isfinite(a) or a < 0:
            raise ValueError(f"alpha must be a finite number >= 0 (or a sequence of them), got {alpha!r}")
    A = len(alphas)
    enc_out = enc(src, lengths)
    state = dec.init_state(enc_out).repeat_interleave(k)        # row b*k + j: beam j of sentence b
    B, S = src.shape
    dev = src.device
    maxlen = max_lengths(lengths, max_len_a, max_len_b).to(dev)
    L = int(maxlen.max())
    pad = dec.padding_idx if dec.padding_idx is not None else 0
    has_attn = dec.attn is not None
    adt = enc_out.states.dtype

    scores = torch.zeros(B, k, dtype=torch.float32, device=dev)
    scores[:, 1:] = float("-inf")                                # first step: one live beam
    hist = torch.full((B, k, L), pad, dtype=torch.long, device=dev)
    ahist = torch.zeros(B, k, L, S, dtype=adt, device=dev) if has_attn else None
    # one best hypothesis per alpha and sentence
    best_score = torch.full((A, B), float("-inf"), dtype=torch.float32, device=dev)
    best_tok = torch.full((A, B, L), pad, dtype=torch.long, device=dev)
    best_len = torch.zeros(A, B, dtype=torch.long, device=dev)
    best_attn = torch.zeros(A, B, L, S, dtype=adt, device=dev) if has_attn else None
    n_done = torch.zeros(B, dtype=torch.long, device=dev)
    active = torch.ones(B, dtype=torch.bool, device=dev)
    rank = torch.arange(2 * k, device=dev)
    rows = torch.arange(B, device=dev).unsqueeze(1)              # [B,1]
    prev = torch.full((B * k,), bos, dtype=torch.long, device=dev)
    every = _check_every(dev)
    for t in range(L):
        logits, state, w = dec.step(prev, state)
        logp = torch.log_softmax(logits.float(), -1)
        logp[:, pad] = float("-inf")                             # padding is never an output
        logp = logp.view(B, k, V)
        vals, idx = (scores.unsqueeze(2) + logp).view(B, k * V).topk(2 * k, dim=1)
        beam, tok = idx // V, idx % V                            # [B,2k]
        is_eos = tok == eos
        last = (t + 1 >= maxlen).unsqueeze(1)                    # [B,1]
        fin = active.unsqueeze(1) & (rank < k) & (is_eos | last) & torch.isfinite(vals)
        norm = torch.stack([vals / length_penalty(t + 1, a) for a in alphas])       # [A,B,2k]
        cand, j = norm.masked_fill(~fin, float("-inf")).max(2)                    # [A,B]
        # Update every sentence's best hypothesis with selects, not an if: no host sync.
        better = cand > best_score
        src_beam = beam.expand(A, B, 2 * k).gather(2, j.unsqueeze(2)).squeeze(2)   # [A,B]
        tb = tok.expand(A, B, 2 * k).gather(2, j.unsqueeze(2)).squeeze(2)
        keep = tb != eos                          # a max-length ending keeps its last token
        cand_tok = hist[rows.squeeze(1), src_beam]                                # [A,B,L]
        cand_tok[:, :, t] = tb.masked_fill(~keep, pad)
        best_tok = torch.where(better.unsqueeze(2), cand_tok, best_tok)
        best_len = torch.where(better, t + keep.long(), best_len)
        best_score = torch.where(better, cand, best_score)
        if has_attn:
            cand_attn = ahist[rows.squeeze(1), src_beam]                          # [A,B,L,S]
            wb = w.view(B, k, S)[rows.squeeze(1), src_beam]                       # [A,B,S]
            cand_attn[:, :, t] = wb.masked_fill(~keep.unsqueeze(2), 0.0)
            best_attn = torch.where(better.view(A, B, 1, 1), cand_attn, best_attn)
        n_done += fin.sum(1)
        active &= (n_done < k) & ~last.squeeze(1)
        if (t + 1) % every == 0 and not bool(active.any()):
            break
        # The next beam: the first k non-EOS extensions (there are always at least k of 2k).
        pick = torch.sort(is_eos.to(torch.uint8), dim=1, stable=True).indices[:, :k]
        nb, nt = beam.gather(1, pick), tok.gather(1, pick)
        scores = vals.gather(1, pick)
        state = state.reorder((rows * k + nb).view(-1))
        hist = hist[rows, nb]
        hist[:, :, t] = nt
        if has_attn:
            ahist = ahist[rows, nb]
            ahist[:, :, t] = w.view(B, k, S)[rows, nb]
        prev = nt.view(-1)
    out = []
    for i in range(A):
        n = int(best_len[i].max()) if B else 0
        out.append(DecodeResult(best_tok[i, :, :n].contiguous(), best_len[i], best_score[i],
                                best_attn[i, :, :n].contiguous() if has_attn else None))
    return tuple(out) if many else out[0]


__all__ = ["DecodeResult", "greedy_decode", "beam_search", "clear_cuda_graphs", "length_penalty", "max_lengths"]
