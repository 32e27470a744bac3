"""LSTM and GRU at B=32, T=64, H=256, forward+backward: fastrnn's cpu backend against torch.nn, called
alternately in one process. Prints the median of the per-pair time ratios, robust to a shared
machine whose speed drifts. The two sides are the closures `python -m fastrnn.bench rnn` times.
Usage: python bench/cpu_paired.py [pairs, default 100]"""
import statistics
import sys
import time

import torch

from fastrnn.bench.rnn import _module_fn, _op_fn, _ref_module

T, B, H = 64, 32, 256
pairs = int(sys.argv[1]) if len(sys.argv) > 1 else 100
for cell in ("LSTM", "GRU"):
    mod = _ref_module(cell, H, H, "cpu", torch.float32)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(T, B, H, generator=g).requires_grad_()
    h0 = torch.zeros(B, H)
    c0 = torch.zeros(B, H) if cell == "LSTM" else None
    gy = torch.randn(T, B, H, generator=g)
    fast = _op_fn(cell, mod, "cpu", x, h0, c0, True, gy)
    hx = (h0[None], c0[None]) if cell == "LSTM" else h0[None]
    base = _module_fn(mod, x, hx, True, gy, list(mod.parameters()))
    for _ in range(5):
        fast(), base()
    F, Bs, R = [], [], []
    for _ in range(pairs):
        t0 = time.perf_counter(); fast(); t1 = time.perf_counter(); base(); t2 = time.perf_counter()  # noqa: E702
        F.append((t1 - t0) * 1e3), Bs.append((t2 - t1) * 1e3), R.append((t1 - t0) / (t2 - t1))
    q = statistics.quantiles(R, n=4)
    print(f"{cell} B={B} fwd+bwd, {pairs} alternating pairs: ratio median {statistics.median(R):.3f} "
          f"(quartiles {q[0]:.3f}-{q[2]:.3f}); fastrnn min {min(F):.2f} med {statistics.median(F):.2f} ms, "
          f"torch.nn min {min(Bs):.2f} med {statistics.median(Bs):.2f} ms")
