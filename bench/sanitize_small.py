"""Small LSTM/GRU forward+backward cases on the cuda backend, and the decoding step's kernels
(the one-kernel T=1 LSTM/GRU step, the few-rows linear layer, greedy_update), for compute-sanitizer.

    compute-sanitizer --tool memcheck  python bench/sanitize_small.py
    compute-sanitizer --tool racecheck python bench/sanitize_small.py --quick

Runs both CUDA paths (standard, persistent) with lengths and awkward sizes, checks the results
loosely against the fp64 reference (so a wrong answer also fails), and exits non-zero on any
mismatch. Sizes are tiny: under the sanitizer every access is instrumented.
"""
import argparse
import os
import sys

import torch

from fastrnn.ops.gru import gru as _gru
from fastrnn.ops.lstm import lstm as _lstm


def run(cell, T, B, I, H, dtype, path, lengths, proj=0):
    os.environ["FASTRNN_CUDA_PATH"] = path
    os.environ["FASTRNN_CUDA_POISON"] = "1"
    g = torch.Generator().manual_seed(T * 1000 + B * 100 + H)
    G = 4 if cell == "lstm" else 3
    P = proj or H

    def r(*s):
        return (torch.rand(*s, generator=g, dtype=torch.float64) * 2 - 1) * 0.5

    t = {"x": r(T, B, I), "h0": r(B, P), "w_ih": r(G * H, I), "w_hh": r(G * H, P), "b_ih": r(G * H),
         "b_hh": r(G * H)}
    if cell == "lstm":
        t["c0"] = r(B, H)
        if proj:
            t["w_hr"] = r(P, H)
    lens = torch.tensor(lengths) if lengths else None
    results = []
    for dt, backend in ((torch.float64, "reference"), (dtype, "cuda")):
        ins = {k: v.to("cuda", dt).requires_grad_(True) for k, v in t.items()}
        if cell == "lstm":
            y, (h, c) = _lstm(ins["x"], ins["h0"], ins["c0"], ins["w_ih"], ins["w_hh"], ins["b_ih"],
                                      ins["b_hh"], backend=backend, w_hr=ins.get("w_hr"), lengths=lens)
            outs = [y, h, c]
        else:
            y, h = _gru(ins["x"], ins["h0"], ins["w_ih"], ins["w_hh"], ins["b_ih"], ins["b_hh"],
                               backend=backend, lengths=lens)
            outs = [y, h]
        loss = sum(o.double().sin().sum() for o in outs)
        grads = torch.autograd.grad(loss, list(ins.values()))
        results.append([o.detach().double() for o in outs] + [gr.double() for gr in grads])
    torch.cuda.synchronize()
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    worst = max(((a - b).abs().max() / (1 + b.abs().max())).item() for a, b in zip(results[1], results[0]))
    ok = worst <= tol and all(torch.isfinite(a).all() for a in results[1])
    print(f"{cell:4s} T={T} B={B} I={I} H={H} P={P} {str(dtype)[6:]:8s} {path:10s} lengths={lengths} "
          f"rel.err={worst:.2e} {'ok' if ok else 'MISMATCH'}", flush=True)
    return ok


def decode_cases():
    """The decoding-step kernels at tiny, partly unaligned sizes against fp64/ATen references."""
    import torch.nn.functional as F

    from fastrnn.ops.decode import greedy_update, reference
    from fastrnn.ops.linear import linear, linear_cat

    os.environ["FASTRNN_CUDA_PATH"] = "auto"
    os.environ["FASTRNN_CUDA_POISON"] = "1"
    g = torch.Generator().manual_seed(5)
    ok = True

    def r(*s):
        return (torch.rand(*s, generator=g, dtype=torch.float64) * 2 - 1) * 0.5

    def report(what, err, tol=1e-4):
        nonlocal ok
        good = err <= tol
        ok = ok and good
        print(f"{what:40s} rel.err={err:.2e} {'ok' if good else 'MISMATCH'}", flush=True)

    with torch.no_grad():
        for cell in ("gru", "lstm"):
            for B, I, H in ((1, 8, 40), (3, 5, 33)):
                G = 4 if cell == "lstm" else 3
                t = [r(1, B, I), r(B, H), r(B, H), r(G * H, I), r(G * H, H), r(G * H), r(G * H)]
                if cell == "gru":
                    del t[2]
                outs = []
                for dt, backend in ((torch.float64, "reference"), (torch.float32, "cuda")):
                    a = [v.to("cuda", dt) for v in t]
                    o = _gru(*a, backend=backend) if cell == "gru" else _lstm(*a, backend=backend)
                    outs.append([o[0], *(o[1] if cell == "lstm" else (o[1],))])
                report(f"{cell} step T=1 B={B} I={I} H={H}",
                       max(((x.double() - y).abs().max()).item() for x, y in zip(outs[1], outs[0])))
        for M, K, N in ((1, 16, 40), (3, 7, 9)):
            x, w, b = r(M, K), r(N, K), r(N)
            y = linear(x.float().cuda(), w.float().cuda(), b.float().cuda(), backend="kernel")
            report(f"linear M={M} K={K} N={N}", (y.double().cpu() - F.linear(x, w, b)).abs().max().item())
            x2 = r(M, 5)
            w2 = r(N, K + 5)
            y = linear_cat(x.float().cuda(), x2.float().cuda(), w2.float().cuda(), b.float().cuda(), tanh=True)
            ref = torch.tanh(F.linear(torch.cat([x, x2], 1), w2, b))
            report(f"linear_cat+tanh M={M} K={K}+5 N={N}", (y.double().cpu() - ref).abs().max().item())
        B, V, L, S = 3, 1000, 4, 5
        logits = r(B, V).float().cuda() * 20
        st = [torch.tensor([1]), torch.tensor([4, 2, 4]), torch.tensor([True, True, False]),
              torch.zeros(B, L, dtype=torch.long), torch.zeros(B), torch.zeros(B, dtype=torch.long),
              torch.zeros(B, dtype=torch.long), torch.zeros(B, L, S), torch.zeros(1, dtype=torch.long)]
        w = torch.softmax(r(B, S).float(), -1).cuda()
        res = []
        for fn in (reference, greedy_update):
            s2 = [v.cuda() for v in st]
            fn(logits, w, s2[0], 0, 2, s2[1], s2[2], s2[3], s2[4], s2[5], s2[6], s2[7], t_next=s2[8])
            res.append(s2)
        same = all(torch.equal(a, b) for i, (a, b) in enumerate(zip(*res)) if i != 4)
        report("greedy_update B=3 V=1000", (res[1][4] - res[0][4]).abs().max().item() if same else float("inf"))
    torch.cuda.synchronize()
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer cases (racecheck is slow)")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("needs a CUDA GPU", file=sys.stderr)
        return 2
    cases = [
        ("lstm", 3, 3, 5, 40, torch.float32, "persistent", [3, 1, 2]),
        ("gru", 3, 3, 5, 40, torch.float32, "persistent", [3, 1, 2]),
        ("lstm", 2, 9, 4, 33, torch.float16, "persistent", None),
        ("gru", 2, 1, 4, 33, torch.bfloat16, "persistent", None),
    ]
    if not args.quick:
        cases += [
            ("lstm", 3, 3, 5, 40, torch.float32, "standard", [3, 1, 2]),
            ("gru", 3, 3, 5, 40, torch.float32, "standard", [3, 1, 2]),
            ("lstm", 2, 2, 4, 24, torch.float16, "standard", None),
        ]
    ok = all([run(*c) for c in cases])
    if not args.quick:
        ok = run("lstm", 3, 3, 5, 24, torch.float32, "standard", [3, 1, 2], proj=8) and ok
    ok = decode_cases() and ok
    print("all ok" if ok else "MISMATCH", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
