"""Where one greedy-decoding step's time goes: the kernels of one step of the decode benchmark's
model (2-layer GRU decoder, H=600, additive attention, V=20000) under torch.profiler, with their
device time, for fastrnn's step and the torch.nn baseline's, at B=1 by default.

    python bench/decode_profile.py [--device cuda] [--batch 1] [--vocab 20000] [--out FILE]

"fastrnn greedy token" is one token of greedy_decode: the step and its bookkeeping (one
fused kernel, fastrnn.ops.greedy_update), as its CUDA graph replays it.
It prints, per implementation, the number of kernels a step launches, the sum of their device
time (the floor a CUDA graph's replay approaches) and the ten longest. On the CPU (no GPU) it
lists the ATen operators instead, for a dry run.
"""
from __future__ import annotations

import argparse
import sys

import torch
from torch.profiler import ProfilerActivity, profile


def _kernels(fn, device: str, reps: int = 5):
    """(name, calls, total device us) per kernel over reps calls of fn, per call."""
    for _ in range(3):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=acts) as prof:
        for _ in range(reps):
            fn()
        if device == "cuda":
            torch.cuda.synchronize()
    rows = {}
    for e in prof.events():
        if device == "cuda":
            if e.device_type != torch.autograd.DeviceType.CUDA:
                continue
            us = e.device_time
        else:
            if e.cpu_parent is not None:      # top-level operators only
                continue
            us = e.cpu_time
        name, calls, tot = rows.get(e.name, (e.name, 0, 0.0))
        rows[e.name] = (name, calls + 1, tot + us)
    return [(n, c / reps, t / reps) for n, c, t in rows.values()]


def main(argv=None) -> int:
    from fastrnn import AttentionDecoder, EncoderOutput
    from fastrnn.bench.decode import TorchNNDecoder

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--vocab", type=int, default=20000)
    p.add_argument("--out", default=None, help="also write the report to this file")
    a = p.parse_args(argv)
    dev = torch.device(a.device)
    H = A = M = 600
    E, S, B, V, layers = 300, 30, a.batch, a.vocab, 2
    torch.manual_seed(0)
    dec = AttentionDecoder(V, E, H, M, num_layers=layers, cell="gru", attention="additive",
                           attention_hidden=A).to(dev).eval()
    base = TorchNNDecoder.like(dec).to(dev).eval()
    keys = torch.randn(B, S, M, device=dev)
    mask = torch.ones(B, S, dtype=torch.bool, device=dev)
    h0 = torch.tanh(torch.randn(layers, B, H, device=dev))
    with torch.inference_mode():
        state = dec.init_state(EncoderOutput(keys, mask, h0))
        kp = base.w_k(keys)
        tok = torch.full((B,), 1, dtype=torch.long, device=dev)
        hs, feed = list(h0.unbind(0)), keys.new_zeros(B, H)

        def ours():
            logits, _, _ = dec.step(tok, state)
            return logits.argmax(-1)

        def theirs():
            logits, _, _ = base.step(tok, hs, feed, keys, mask, kp)
            return logits.argmax(-1)

        from fastrnn.nn.decoding import _Greedy

        maxlen = torch.full((B,), 1 << 20, dtype=torch.long, device=dev)
        greedy = _Greedy(state, maxlen, 64, 1, -1, 0, S, keys.dtype, True)

        def whole():
            # one token of greedy_decode as its CUDA graph replays it: the decoder's step and the
            # bookkeeping (fastrnn.ops.greedy_update); the column index wraps to stay in the buffer
            if int(greedy.t) >= 60:
                greedy.t.zero_()
            greedy._one(dec, state)

        lines = [f"# one greedy step, B={B} V={V} H={H} on {dev}"
                 + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else "")]
        for label, fn in (("fastrnn", ours), ("fastrnn greedy token", whole), ("torch.nn+pre", theirs)):
            ks = sorted(_kernels(fn, dev.type), key=lambda r: -r[2])
            n = sum(c for _, c, _ in ks)
            tot = sum(t for _, _, t in ks)
            what = "kernels" if dev.type == "cuda" else "operators"
            lines.append(f"{label}: {n:.0f} {what} a step, {tot:.1f} us of device time in all")
            for name, c, t in ks[:10]:
                lines.append(f"  {t:8.1f} us  x{c:<4.0f} {name[:100]}")
    report = "\n".join(lines)
    print(report)
    if a.out:
        with open(a.out, "w") as f:
            f.write(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
