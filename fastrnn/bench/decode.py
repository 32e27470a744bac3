"""decode: per-token latency of greedy decoding, fastrnn.AttentionDecoder vs torch.nn.

Model (the issue's): 2-layer GRU decoder, H=600, additive attention (hidden 600), input
feeding, E=300 (the example's skip-gram size), a source of S=30 encoder states of size 600.
Both implementations hold the same weights and must pick the same tokens (checked).

Baselines, timed in the same run:
  torch.nn        the model as commonly written: nn.GRUCell per layer, Bahdanau attention with
                  nn.Linear on the keys at every step (as in PyTorch's seq2seq tutorial), masked
                  softmax + bmm, under torch.no_grad().
  torch.nn+pre    the same with the key projection hoisted out of the loop and
                  torch.inference_mode(): how much of the gain is just that.
A step is: embed the previous token, the GRU stack, attention, the attentional layer, the
output projection over V and the argmax. Per-token latency = time of N steps / N.
On CUDA, fastrnn+graph rows time fastrnn.greedy_decode's loop with cuda_graph=True: each token
is one replay of the step's CUDA graph, which greedy_decode captures on its first call for a
batch shape and keeps; the rows time the later calls, and their first_call_ms field is the
first call's wall time (warm-up step, capture and the N replays). Its tokens are checked against
the loop without the graph.

Threads: torch's default; set OMP_NUM_THREADS=1 for single-thread figures (the header then
shows it). Vocabulary: 20000 by default, the translation example's vocabulary cut (DATA.md); the output
projection (V x 600 weights, 48 MB in fp32 at V=20000) dominates the weights a step reads. At B=1
every linear layer is a matrix-vector product bound by memory bandwidth: fastrnn runs them with
fastrnn.ops.linear (a streaming GEMV over the threads) where torch.nn's F.linear runs ATen's GEMV
on one thread. V=2000 is run too to show the rest of the step's own cost. The floor is the
weights' bytes at the measured read bandwidth (or the FLOPs at the measured matmul rate).
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import List

import torch
from torch import nn

from fastrnn.bench import common


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch", type=int, nargs="+", default=[1, 32], help="batch sizes B")
    p.add_argument("--vocab", type=int, nargs="+", default=[20000, 2000], help="vocabulary sizes V")
    p.add_argument("--hidden", type=int, default=600, help="decoder hidden size H")
    p.add_argument("--embed", type=int, default=300, help="embedding size E")
    p.add_argument("--src-len", type=int, default=30, help="source length S")
    p.add_argument("--steps", type=int, default=32, help="decoding steps N per timed call")
    p.add_argument("--reps", type=int, default=15, help="timed repetitions (median reported)")
    p.add_argument("--dtype", choices=("float32",), default="float32")


class TorchNNDecoder(nn.Module):
    """The baseline: the same model written with torch.nn.GRUCell and eager attention."""

    def __init__(self, V, E, H, M, A, layers=2):
        super().__init__()
        self.embed = nn.Embedding(V, E)
        self.cells = nn.ModuleList([nn.GRUCell(E + H if l == 0 else H, H) for l in range(layers)])
        self.w_q = nn.Linear(H, A, bias=False)
        self.w_k = nn.Linear(M, A, bias=False)
        self.v = nn.Linear(A, 1, bias=False)
        self.combine = nn.Linear(M + H, H, bias=False)
        self.out = nn.Linear(H, V)

    @classmethod
    def like(cls, dec) -> "TorchNNDecoder":
        """A copy of a fastrnn.AttentionDecoder's weights (GRU, additive attention)."""
        m = cls(dec.vocab_size, dec.embed_dim, dec.hidden_size, dec.memory_size,
                dec.attn.hidden_size, dec.num_layers)
        with torch.no_grad():
            m.embed.weight.copy_(dec.embed.full_weight())
            for mine, theirs in zip(m.cells, dec.cells):
                mine.load_state_dict(theirs.state_dict())
            m.w_q.weight.copy_(dec.attn.w_query)
            m.w_k.weight.copy_(dec.attn.w_key)
            m.v.weight.copy_(dec.attn.v_score.unsqueeze(0))
            m.combine.weight.copy_(dec.combine.weight)
            m.out.load_state_dict(dec.out.state_dict())
        return m

    def step(self, tok, hs, feed, keys, mask, key_proj=None):
        x = torch.cat([self.embed(tok), feed], 1)
        new = []
        for cell, h in zip(self.cells, hs):
            h = cell(x, h)
            new.append(h)
            x = h
        kp = self.w_k(keys) if key_proj is None else key_proj
        e = self.v(torch.tanh(self.w_q(h).unsqueeze(1) + kp)).squeeze(2)
        w = torch.softmax(e.masked_fill(~mask, float("-inf")), -1)
        ctx = torch.bmm(w.unsqueeze(1), keys).squeeze(1)
        o = torch.tanh(self.combine(torch.cat([ctx, h], 1)))
        return self.out(o), new, o


def _torch_loop(m, keys, mask, h0, bos, n, precompute):
    ctx = torch.inference_mode() if precompute else torch.no_grad()
    with ctx:
        B = keys.shape[0]
        kp = m.w_k(keys) if precompute else None
        hs = list(h0.unbind(0))
        feed = keys.new_zeros(B, m.combine.out_features)
        tok = torch.full((B,), bos, dtype=torch.long, device=keys.device)
        out = torch.empty(B, n, dtype=torch.long, device=keys.device)
        for t in range(n):
            logits, hs, feed = m.step(tok, hs, feed, keys, mask, kp)
            tok = logits.argmax(-1)
            out[:, t] = tok
        return out


def _fastrnn_loop(dec, enc_out, bos, n):
    with torch.inference_mode():
        state = dec.init_state(enc_out)
        B = enc_out.states.shape[0]
        tok = torch.full((B,), bos, dtype=torch.long, device=enc_out.states.device)
        out = torch.empty(B, n, dtype=torch.long, device=enc_out.states.device)
        for t in range(n):
            logits, state, _ = dec.step(tok, state)
            tok = logits.argmax(-1)
            out[:, t] = tok
        return out


def _fastrnn_greedy(dec, enc_out, lengths, bos, n, cuda_graph):
    """fastrnn.greedy_decode's loop from the encoder's output, exactly n tokens (an EOS id of
    -1 never matches, the maximum length is n), with or without the CUDA graph."""
    from fastrnn.nn.decoding import _greedy

    with torch.inference_mode():
        return _greedy(dec, enc_out, lengths, bos, -1, 0.0, n, cuda_graph).tokens


def _time_interleaved(fns, reps: int):
    """(median, IQR) in ms of each fn, timed in rounds that run every fn once, so a shared
    machine's changing load falls on all of them alike (timing them one after the other lets
    a load change masquerade as a speed-up)."""
    for f in fns:
        f()
    times = [[] for _ in fns]
    for _ in range(max(reps, 3)):
        for i, f in enumerate(fns):
            t0 = time.perf_counter()
            f()
            times[i].append((time.perf_counter() - t0) * 1e3)
    out = []
    for ts in times:
        q = statistics.quantiles(ts, n=4)
        out.append((statistics.median(ts), q[2] - q[0]))
    return out


def _flops_bytes(B, V, E, H, M, A, S, layers):
    """Per token: matmul FLOPs and weight bytes (fp32) of the lean step (keys precomputed)."""
    gru = 3 * H * ((E + H) + H) + (layers - 1) * 3 * H * (2 * H)
    params = gru + A * H + (M + H) * H + H * V + V
    flops = 2 * B * params + 2 * B * S * (A + M)
    return flops, 4 * params


def run(args) -> List[dict]:
    from fastrnn import AttentionDecoder, EncoderOutput

    dev = torch.device(args.device)
    H, E, S, A, M, layers = args.hidden, args.embed, args.src_len, args.hidden, args.hidden, 2
    rows = []
    for V in args.vocab:
        torch.manual_seed(0)
        dec = AttentionDecoder(V, E, H, M, num_layers=layers, cell="gru", attention="additive",
                               attention_hidden=A).to(dev).eval()
        base = TorchNNDecoder.like(dec).to(dev).eval()
        for B in args.batch:
            g = torch.Generator().manual_seed(B)
            keys = torch.randn(B, S, M, generator=g).to(dev)
            lengths = torch.randint(S // 2, S + 1, (B,), generator=g)
            lengths[0] = S
            mask = (torch.arange(S).unsqueeze(0) < lengths.unsqueeze(1)).to(dev)
            keys = keys * mask.unsqueeze(2)
            h0 = torch.tanh(torch.randn(layers, B, H, generator=g)).to(dev)
            enc_out = EncoderOutput(keys, mask, h0)
            n, bos = args.steps, 1
            # Same weights, same greedy choices: anything else means the step paths differ.
            ours = _fastrnn_loop(dec, enc_out, bos, n)
            ref = _torch_loop(base, keys, mask, h0, bos, n, precompute=False)
            agree = float((ours == ref).float().mean())
            if agree < 0.99:
                raise RuntimeError(f"fastrnn and torch.nn greedy tokens differ ({agree:.1%} agree)")
            fns = [lambda: _fastrnn_loop(dec, enc_out, bos, n),
                   lambda: _torch_loop(base, keys, mask, h0, bos, n, False),
                   lambda: _torch_loop(base, keys, mask, h0, bos, n, True)]
            if args.device == "cuda":
                t, tb, tp = (common.time_fn(f, args.device, reps=args.reps) for f in fns)
            else:
                t, tb, tp = _time_interleaved(fns, args.reps)
            fl, by = _flops_bytes(B, V, E, H, M, A, S, layers)
            floor = common.floor_ms(fl, by, args.device, torch.float32)
            cfg = {"cell": "GRU", "B": B, "H": H, "attention": "additive", "V": V, "E": E, "S": S,
                   "layers": layers, "dtype": "float32"}
            per = lambda x: (x[0] / n, x[1] / n)  # noqa: E731  per token
            rows.append(common.row("decode", "fastrnn", "torch.nn", cfg, per(t), per(tb), floor))
            rows.append(common.row("decode", "fastrnn", "torch.nn+pre", cfg, per(t), per(tp), floor))
            if args.device == "cuda":
                # greedy_decode(cuda_graph=True): the step captured once (first call, timed
                # apart) and replayed for each token of every later call.
                from fastrnn.nn.decoding import clear_cuda_graphs

                lens = lengths.to(dev)
                clear_cuda_graphs(dec)
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                graphed = _fastrnn_greedy(dec, enc_out, lens, bos, n, True)
                torch.cuda.synchronize()
                first = {"first_call_ms": round((time.perf_counter() - t0) * 1e3, 3)}
                if not torch.equal(graphed, _fastrnn_greedy(dec, enc_out, lens, bos, n, False)):
                    raise RuntimeError("greedy decoding with and without the CUDA graph differs")
                tg = common.time_fn(lambda: _fastrnn_greedy(dec, enc_out, lens, bos, n, True), args.device,
                                    reps=args.reps)
                rows.append(common.row("decode", "fastrnn+graph", "torch.nn", cfg, per(tg), per(tb), floor,
                                       **first))
                rows.append(common.row("decode", "fastrnn+graph", "torch.nn+pre", cfg, per(tg), per(tp), floor,
                                       **first))
                print(f"# B={B} V={V}: greedy_decode(cuda_graph=True) first call (capture) "
                      f"{first['first_call_ms']} ms for {n} tokens", flush=True)
    return rows
