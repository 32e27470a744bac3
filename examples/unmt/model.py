"""The model of Artetxe et al. 2017 on fastrnn's public API, and the same model in torch.nn.

One encoder shared by both languages reads the fixed cross-lingual embeddings (nmt_utils: the
two mapped tables concatenated); one attentional decoder per language reads and predicts its own
language. ``impl="fastrnn"`` builds fastrnn.Encoder / fastrnn.AttentionDecoder and decodes with
fastrnn.greedy_decode / fastrnn.beam_search. ``impl="torch"`` builds the same architecture
from torch.nn (nn.GRU/LSTM, nn.GRUCell/LSTMCell, attention in eager ops, its own decoding loops)
so that `train --impl torch` measures the baseline of the speedup in the same conditions.

Shape legend: B batch, S source length, T target length, E embedding size, D encoder output
size (2 x hidden per direction), H decoder hidden size, V vocabulary size.
"""
from __future__ import annotations

from collections import namedtuple
from dataclasses import dataclass
from typing import Dict, List

import torch
import torch.nn.functional as F
from torch import nn

from nmt_utils import BOS, EOS, NUM_SPECIAL, PAD

IMPLS = ("fastrnn", "torch")
ATTENTIONS = ("general", "dot", "low_rank", "additive", "none")

# The same field names as fastrnn's so the training loop reads either.
EncoderOutput = namedtuple("EncoderOutput", ["states", "mask", "hidden"])
DecodeResult = namedtuple("DecodeResult", ["tokens", "lengths", "scores", "attention"])


@dataclass
class ModelConfig:
    cell: str = "gru"
    layers: int = 2                 # encoder and decoder layers
    hidden: int = 600               # encoder output size (both directions) = decoder hidden size
    attention: str = "general"      # or dot | low_rank | additive | none
    input_feeding: bool = True
    dropout: float = 0.0
    bidirectional: bool = True
    freeze_embeddings: bool = True  # the paper keeps the cross-lingual embeddings fixed
    # The output layer scores each word by its (fixed, cross-lingual) embedding instead of a free
    # [V,H] matrix: the decoder then predicts a point of the shared space, so what denoising
    # teaches a decoder (emit what the attention reads) carries over to the other language's
    # input from the first steps. Not in the paper (its output layer is free); see README.
    tie_output: bool = False

    def validate(self):
        if self.cell not in ("gru", "lstm"):
            raise ValueError(f"cell must be 'gru' or 'lstm', got {self.cell!r}")
        if self.attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, got {self.attention!r}")
        if self.bidirectional and self.hidden % 2:
            raise ValueError(f"hidden must be even with a bidirectional encoder, got {self.hidden}")
        return self


# ============================================================================ torch.nn version

class FrozenEmbedding(nn.Module):
    """Embedding whose first num_special rows are learned and the rest fixed (or all learned)."""

    def __init__(self, vocab_size, dim, weights=None, freeze=True, num_special=NUM_SPECIAL):
        super().__init__()
        w = torch.randn(vocab_size, dim) * 0.1 if weights is None else weights.clone().float()
        self.num_special, self.freeze = num_special, freeze
        if freeze:
            self.register_buffer("fixed", w)
            self.special = nn.Parameter(torch.randn(num_special, dim) * 0.1)
        else:
            self.weight = nn.Parameter(w)

    def full_weight(self):
        """The [V,E] table (special rows included), as fastrnn.TokenEmbedding.full_weight."""
        if not self.freeze:
            return self.weight
        return torch.cat([self.special, self.fixed[self.num_special:]], 0)

    def forward(self, ids):
        if not self.freeze:
            return F.embedding(ids, self.weight)
        out = F.embedding(ids, self.fixed)
        is_special = (ids < self.num_special).unsqueeze(-1)
        return torch.where(is_special, F.embedding(ids.clamp(max=self.num_special - 1), self.special), out)


class TorchEncoder(nn.Module):
    def __init__(self, vocab_size, embed_dim, hidden_size, num_layers=1, cell="gru", bidirectional=True,
                 dropout=0.0, padding_idx=PAD, embeddings=None, freeze_embeddings=False,
                 num_special=NUM_SPECIAL, dec_hidden_size=None, dec_num_layers=None, backend=None):
        super().__init__()
        self.cell = cell
        self.num_dirs = 2 if bidirectional else 1
        self.output_size = hidden_size * self.num_dirs
        self.dec_hidden = dec_hidden_size or self.output_size
        self.dec_layers = dec_num_layers or num_layers
        self.embed = FrozenEmbedding(vocab_size, embed_dim, embeddings, freeze_embeddings, num_special)
        rnn = nn.GRU if cell == "gru" else nn.LSTM
        self.rnn = rnn(embed_dim, hidden_size, num_layers, batch_first=True,
                       dropout=dropout if num_layers > 1 else 0.0, bidirectional=bidirectional)
        self.drop = nn.Dropout(dropout)
        # bridge: the decoder's initial state from the last layer's final states of both directions
        self.bridge = nn.Linear(self.output_size, self.dec_layers * self.dec_hidden)
        if cell == "lstm":
            self.bridge_c = nn.Linear(self.output_size, self.dec_layers * self.dec_hidden)

    def forward(self, src, lengths):
        B, S = src.shape
        x = self.drop(self.embed(src))
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        y, h = self.rnn(packed)
        states, _ = nn.utils.rnn.pad_packed_sequence(y, batch_first=True, total_length=S)
        mask = torch.arange(S, device=src.device)[None, :] < lengths.to(src.device)[:, None]
        h_n = h[0] if self.cell == "lstm" else h
        last = h_n[-self.num_dirs:].transpose(0, 1).reshape(B, self.output_size)

        def shape(lin):
            return torch.tanh(lin(last)).view(B, self.dec_layers, self.dec_hidden).transpose(0, 1).contiguous()

        hidden = (shape(self.bridge), shape(self.bridge_c)) if self.cell == "lstm" else shape(self.bridge)
        return EncoderOutput(states, mask, hidden)


class EagerAttention(nn.Module):
    """Scores of one kind, masked softmax and the weighted sum, in plain torch ops."""

    def __init__(self, kind, query_size, key_size, hidden=None, rank=None):
        super().__init__()
        self.kind = kind
        if kind == "dot" and query_size != key_size:
            raise ValueError(f"dot attention needs decoder hidden == encoder output, got {query_size}, {key_size}")
        if kind == "general":
            self.w = nn.Linear(key_size, query_size, bias=False)           # W k, precomputed
        elif kind == "low_rank":
            r = rank or max(1, min(query_size, key_size) // 2)
            self.u = nn.Linear(query_size, r, bias=False)
            self.v = nn.Linear(key_size, r, bias=False)
        elif kind == "additive":
            h = hidden or query_size
            self.w_query = nn.Linear(query_size, h, bias=False)
            self.w_key = nn.Linear(key_size, h, bias=False)
            self.v_score = nn.Linear(h, 1, bias=False)

    def project_keys(self, keys):
        if self.kind == "general":
            return self.w(keys)
        if self.kind == "low_rank":
            return self.v(keys)
        if self.kind == "additive":
            return self.w_key(keys)
        return keys

    def forward(self, q, keys, key_proj, mask):        # q [B,H], keys [B,S,D] -> [B,D], [B,S]
        if self.kind == "additive":
            e = self.v_score(torch.tanh(key_proj + self.w_query(q).unsqueeze(1))).squeeze(-1)
        else:
            qq = self.u(q) if self.kind == "low_rank" else q
            e = torch.bmm(key_proj, qq.unsqueeze(-1)).squeeze(-1)
        e = e.masked_fill(~mask, float("-inf"))
        w = torch.softmax(e, dim=-1)
        return torch.bmm(w.unsqueeze(1), keys).squeeze(1), w


class TorchState(namedtuple("TorchState", ["h", "c", "feed", "keys", "key_proj", "mask"])):
    def reorder(self, idx):
        """The state of the beam slots idx (rows of the batch)."""
        return TorchState(self.h.index_select(1, idx),
                          None if self.c is None else self.c.index_select(1, idx),
                          self.feed.index_select(0, idx), self.keys.index_select(0, idx),
                          self.key_proj.index_select(0, idx), self.mask.index_select(0, idx))


class TorchAttentionDecoder(nn.Module):
    def __init__(self, vocab_size, embed_dim, hidden_size, memory_size, num_layers=1, cell="gru",
                 attention="general", attention_hidden=None, rank=None, input_feeding=True, dropout=0.0,
                 embeddings=None, freeze_embeddings=False, num_special=NUM_SPECIAL, tie_embeddings=False,
                 padding_idx=PAD, backend=None):
        super().__init__()
        self.cell, self.hidden_size, self.num_layers = cell, hidden_size, num_layers
        self.input_feeding = input_feeding
        self.tie_embeddings = tie_embeddings
        self.output_size = embed_dim if tie_embeddings else hidden_size   # the attentional vector's size
        self.embed = FrozenEmbedding(vocab_size, embed_dim, embeddings, freeze_embeddings, num_special)
        Cell = nn.GRUCell if cell == "gru" else nn.LSTMCell
        in0 = embed_dim + (self.output_size if input_feeding else 0)
        self.cells = nn.ModuleList([Cell(in0 if i == 0 else hidden_size, hidden_size) for i in range(num_layers)])
        self.attn = None if attention in (None, "none") else \
            EagerAttention(attention, hidden_size, memory_size, attention_hidden, rank)
        if self.attn is not None:
            self.combine = nn.Linear(hidden_size + memory_size, self.output_size, bias=False)
        elif self.output_size != hidden_size:
            self.combine = nn.Linear(hidden_size, self.output_size, bias=False)
        else:
            self.combine = None
        self.drop = nn.Dropout(dropout)
        if tie_embeddings:
            self.out_bias = nn.Parameter(torch.zeros(vocab_size))
        else:
            self.out = nn.Linear(hidden_size, vocab_size)

    def project(self, o):
        """o [...,O] -> logits [...,V]: the free output layer, or scores against the embeddings."""
        if not self.tie_embeddings:
            return self.out(o)
        e = self.embed
        if not e.freeze:
            return F.linear(o, e.weight, self.out_bias)
        # two products instead of concatenating a [V,E] table on every step (as fastrnn does)
        return torch.cat([F.linear(o, e.special), F.linear(o, e.fixed[e.num_special:])], -1) + self.out_bias

    def init_state(self, enc_out):
        B = enc_out.states.shape[0]
        h = enc_out.hidden[0] if self.cell == "lstm" else enc_out.hidden
        c = enc_out.hidden[1] if self.cell == "lstm" else None
        feed = enc_out.states.new_zeros(B, self.output_size)
        kp = self.attn.project_keys(enc_out.states) if self.attn is not None else enc_out.states
        return TorchState(h, c, feed, enc_out.states, kp, enc_out.mask)

    def _step(self, x, st):
        """x [B,E] embedded token -> attentional vector [B,H], new state, weights [B,S]."""
        inp = torch.cat([x, st.feed], -1) if self.input_feeding else x
        hs, cs = [], []
        for i, cell in enumerate(self.cells):
            if self.cell == "lstm":
                h, c = cell(inp, (st.h[i], st.c[i]))
                cs.append(c)
            else:
                h = cell(inp, st.h[i])
            hs.append(h)
            inp = self.drop(h) if i + 1 < len(self.cells) else h
        top = hs[-1]
        if self.attn is not None:
            ctx, w = self.attn(top, st.keys, st.key_proj, st.mask)
            att_vec = torch.tanh(self.combine(torch.cat([ctx, top], -1)))
        else:
            w = st.mask.new_zeros(st.mask.shape, dtype=top.dtype)
            att_vec = top if self.combine is None else torch.tanh(self.combine(top))
        att_vec = self.drop(att_vec)
        new = TorchState(torch.stack(hs), torch.stack(cs) if cs else None, att_vec, st.keys, st.key_proj, st.mask)
        return att_vec, new, w

    def step(self, tokens, state):
        att_vec, state, w = self._step(self.drop(self.embed(tokens)), state)
        return self.project(att_vec), state, w

    def output_layer(self, features):
        return self.project(features)

    def forward(self, tgt_in, enc_out, features_only=False):
        st = self.init_state(enc_out)
        x = self.drop(self.embed(tgt_in))
        vecs, ws = [], []
        for t in range(tgt_in.shape[1]):
            v, st, w = self._step(x[:, t], st)
            vecs.append(v)
            ws.append(w)
        feats = torch.stack(vecs, 1)
        if features_only:
            return feats, torch.stack(ws, 1)
        # one output projection over all steps: the vocabulary matmul dominates otherwise
        return self.project(feats), torch.stack(ws, 1)


def _max_lens(lengths, a, b):
    return torch.ceil(lengths.float() * a + b).long()


@torch.no_grad()
def torch_greedy_decode(enc, dec, src, lengths, bos, eos, max_len_a=1.5, max_len_b=5, padding_idx=PAD):
    out = enc(src, lengths)
    st = dec.init_state(out)
    B = src.shape[0]
    max_lens = _max_lens(lengths, max_len_a, max_len_b).to(src.device)
    tok = torch.full((B,), bos, dtype=torch.long, device=src.device)
    done = torch.zeros(B, dtype=torch.bool, device=src.device)
    scores = torch.zeros(B, device=src.device)
    S, n = src.shape[1], int(max_lens.max())
    tokens = torch.full((B, n), eos, dtype=torch.long, device=src.device)
    attn = src.new_zeros(B, n, S, dtype=out.states.dtype)
    rows = torch.arange(B, device=src.device)   # the batch rows still decoded (as fastrnn's greedy_decode:
    for t in range(n):                          # finished ones leave once at most 3/4 still run)
        logits, st, w = dec.step(tok, st)
        logp = torch.log_softmax(logits.float(), -1)
        nxt = logp.argmax(-1)
        # out of length budget: the sentence ends there, an EOS that was not produced (not scored)
        over = max_lens[rows] <= t
        nxt = torch.where(over, torch.full_like(nxt, eos), nxt)
        d = done[rows]
        scores[rows] += torch.where(d | over, torch.zeros_like(nxt, dtype=scores.dtype),
                                    logp.gather(1, nxt[:, None]).squeeze(1))
        nxt = torch.where(d, torch.full_like(nxt, eos), nxt)
        done[rows] = d | (nxt == eos)
        tokens[rows, t] = nxt
        attn[rows, t] = w.to(attn.dtype)
        tok = nxt
        running = ~done[rows]
        n_run = int(running.sum())
        if n_run == 0:
            n = t + 1
            break
        if n_run <= 0.75 * rows.shape[0]:
            keep = running.nonzero().squeeze(1)
            rows, tok, st = rows[keep], tok[keep], st.reorder(keep)
    tokens, attn = tokens[:, :n], attn[:, :n]
    is_eos = tokens == eos
    lens = torch.where(is_eos.any(1), is_eos.float().argmax(1), torch.full_like(lengths, tokens.shape[1]).to(src.device))
    keep = torch.arange(tokens.shape[1], device=src.device)[None] < lens[:, None]
    tokens = tokens.masked_fill(~keep, padding_idx)
    return DecodeResult(tokens, lens, scores, attn * keep[:, :, None])


@torch.no_grad()
def torch_beam_search(enc, dec, src, lengths, bos, eos, beam_size=4, alpha=0.6, max_len_a=1.5,
                      max_len_b=5, padding_idx=PAD):
    """Batched beam search, GNMT length penalty ((5+len)/6)^alpha on finished hypotheses; with a
    sequence of alphas, one DecodeResult per alpha from one search (as fastrnn.beam_search)."""
    many = isinstance(alpha, (list, tuple))
    alphas = list(alpha) if many else [alpha]
    K, B, dev = beam_size, src.shape[0], src.device
    out = enc(src, lengths)
    rep = lambda t: t.repeat_interleave(K, dim=0)
    hid = tuple(h.repeat_interleave(K, 1) for h in out.hidden) if isinstance(out.hidden, tuple) \
        else out.hidden.repeat_interleave(K, 1)
    st = dec.init_state(EncoderOutput(rep(out.states), rep(out.mask), hid))
    max_lens = _max_lens(lengths, max_len_a, max_len_b).tolist()
    beam = torch.zeros(B, K, device=dev)
    beam[:, 1:] = float("-inf")
    tok = torch.full((B * K,), bos, dtype=torch.long, device=dev)
    hist = torch.zeros(B * K, 0, dtype=torch.long, device=dev)
    ahist = torch.zeros(B * K, 0, src.shape[1], device=dev)
    finished: List[List[tuple]] = [[] for _ in range(B)]
    for t in range(max(max_lens)):
        logits, st, w = dec.step(tok, st)
        V = logits.shape[-1]
        cand = (beam.view(-1, 1) + torch.log_softmax(logits.float(), -1)).view(B, K * V)
        top_s, top_i = cand.topk(min(2 * K, K * V), dim=1)
        new_beam = torch.full((B, K), float("-inf"), device=dev)
        new_src = torch.zeros(B, K, dtype=torch.long, device=dev)
        new_tok = torch.full((B, K), eos, dtype=torch.long, device=dev)
        for b in range(B):
            if len(finished[b]) >= K:
                continue
            k = 0
            last = t + 1 >= max_lens[b]
            for s, i in zip(top_s[b].tolist(), top_i[b].tolist()):
                if s == float("-inf"):
                    break
                src_k, word = divmod(i, V)
                row = b * K + src_k
                if word == eos or last:
                    seq = hist[row].tolist() + ([] if word == eos else [word])
                    att = torch.cat([ahist[row], w[row:row + 1]], 0)[:len(seq)]
                    finished[b].append((s, len(seq) + 1, seq, att))
                    if len(finished[b]) >= K:
                        break
                elif k < K:
                    new_beam[b, k], new_src[b, k], new_tok[b, k] = s, row, word
                    k += 1
                if k >= K and len(finished[b]) > 0 and not last:
                    break
        if all(len(f) >= K for f in finished):
            break
        idx = new_src.view(-1)
        st = st.reorder(idx)
        hist = torch.cat([hist.index_select(0, idx), new_tok.view(-1, 1)], 1)
        ahist = torch.cat([ahist.index_select(0, idx), w.index_select(0, idx).unsqueeze(1)], 1)
        beam, tok = new_beam, new_tok.view(-1)
    out = []
    for a in alphas:
        lp = lambda n: ((5.0 + n) / 6.0) ** a
        best = [max(((s / lp(n), seq, att) for s, n, seq, att in f), key=lambda x: x[0]) if f
                else (0.0, [], torch.zeros(0, src.shape[1])) for f in finished]
        L = max(1, max(len(x[1]) for x in best))
        tokens = torch.full((B, L), padding_idx, dtype=torch.long, device=dev)
        attn = torch.zeros(B, L, src.shape[1], device=dev)
        for b, (_, seq, att) in enumerate(best):
            if seq:
                tokens[b, :len(seq)] = torch.tensor(seq, device=dev)
                attn[b, :len(seq)] = att
        out.append(DecodeResult(tokens, torch.tensor([len(x[1]) for x in best], device=dev),
                                torch.tensor([x[0] for x in best], device=dev), attn))
    return tuple(out) if many else out[0]


# ============================================================================ the UNMT model

def _fastrnn_blocks():
    import fastrnn
    missing = [n for n in ("Encoder", "AttentionDecoder", "greedy_decode", "beam_search") if not hasattr(fastrnn, n)]
    if missing:
        raise RuntimeError(f"this fastrnn ({fastrnn.__file__}) lacks {', '.join(missing)}: "
                           "install a fastrnn with the seq2seq blocks, or pass --impl torch")
    return fastrnn


class UNMT(nn.Module):
    """Shared encoder + one decoder per language. Ids: encoder joint, decoders local (nmt_utils)."""

    def __init__(self, cfg: ModelConfig, langs: List[str], enc_vocab: int, dec_vocabs: Dict[str, int],
                 embed_dim: int, impl: str = "fastrnn", enc_embeddings=None, dec_embeddings=None,
                 backend=None):
        super().__init__()
        cfg.validate()
        if impl not in IMPLS:
            raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
        self.cfg, self.langs, self.impl = cfg, list(langs), impl
        if impl == "fastrnn":
            fr = _fastrnn_blocks()
            Enc, Dec = fr.Encoder, fr.AttentionDecoder
            kw = {"backend": backend}         # a fastrnn backend name, or None for its default order
        else:
            Enc, Dec = TorchEncoder, TorchAttentionDecoder
            kw = {}
        dirs = 2 if cfg.bidirectional else 1
        self.encoder = Enc(enc_vocab, embed_dim, cfg.hidden // dirs, num_layers=cfg.layers, cell=cfg.cell,
                           bidirectional=cfg.bidirectional, dropout=cfg.dropout, padding_idx=PAD,
                           embeddings=enc_embeddings, freeze_embeddings=cfg.freeze_embeddings,
                           num_special=NUM_SPECIAL, dec_hidden_size=cfg.hidden, dec_num_layers=cfg.layers, **kw)
        att = None if cfg.attention == "none" else cfg.attention
        self.decoders = nn.ModuleDict({
            lang: Dec(dec_vocabs[lang], embed_dim, cfg.hidden, cfg.hidden, num_layers=cfg.layers, cell=cfg.cell,
                      attention=att, input_feeding=cfg.input_feeding, dropout=cfg.dropout,
                      embeddings=None if dec_embeddings is None else dec_embeddings[lang],
                      freeze_embeddings=cfg.freeze_embeddings, num_special=NUM_SPECIAL,
                      tie_embeddings=cfg.tie_output, padding_idx=PAD, **kw)
            for lang in self.langs})

    def loss(self, src, src_len, tgt_lang, tgt, tgt_len):
        """Summed token cross-entropy of decoding tgt (local ids, no bos/eos) from src (joint ids),
        and the number of target tokens (eos included)."""
        B = tgt.shape[0]
        bos = torch.full((B, 1), BOS, dtype=torch.long, device=tgt.device)
        tgt_in = torch.cat([bos, tgt], 1)
        tgt_out = torch.cat([tgt, torch.full((B, 1), PAD, dtype=torch.long, device=tgt.device)], 1)
        tgt_out[torch.arange(B, device=tgt.device), tgt_len.to(tgt.device)] = EOS
        dec = self.decoders[tgt_lang]
        feats, _ = dec(tgt_in, self.encoder(src, src_len), features_only=True)
        # the vocabulary-sized product (the step's largest, forward and backward) only for the
        # scored positions: about 30% of a batch of random sentences is padding
        keep = tgt_out != PAD
        logits = dec.output_layer(feats[keep])
        return F.cross_entropy(logits.float(), tgt_out[keep], reduction="sum"), int(keep.sum())

    @torch.no_grad()
    def translate(self, src, src_len, tgt_lang, beam=1, alpha=0.6, max_len_a=1.5, max_len_b=5):
        """-> DecodeResult; with beam > 1 and a sequence of alphas, one per alpha from one search
        (greedy decoding, beam 1, has no length penalty: the same result for each)."""
        dec = self.decoders[tgt_lang]
        if beam <= 1 and isinstance(alpha, (list, tuple)):
            return (self.translate(src, src_len, tgt_lang, 1, 0.6, max_len_a, max_len_b),) * len(alpha)
        if self.impl == "fastrnn":
            import fastrnn
            if beam > 1:
                return fastrnn.beam_search(self.encoder, dec, src, src_len, BOS, EOS, beam_size=beam, alpha=alpha,
                                           max_len_a=max_len_a, max_len_b=max_len_b)
            return fastrnn.greedy_decode(self.encoder, dec, src, src_len, BOS, EOS,
                                         max_len_a=max_len_a, max_len_b=max_len_b)
        if beam > 1:
            return torch_beam_search(self.encoder, dec, src, src_len, BOS, EOS, beam_size=beam, alpha=alpha,
                                     max_len_a=max_len_a, max_len_b=max_len_b)
        return torch_greedy_decode(self.encoder, dec, src, src_len, BOS, EOS, max_len_a=max_len_a,
                                   max_len_b=max_len_b)

