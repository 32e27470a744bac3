"""attention: fused attention scores (fastrnn.ops.attention) vs eager PyTorch and torch.compile.

Per kind and config, forward and forward+backward: median time of fastrnn's default backend,
of the eager reference code (naive.py) and of torch.compile of that same eager code, and the
peak extra memory of fastrnn and eager (CPU: the largest total of live tensors allocated by the
op, tracked through a dispatch mode; CUDA: torch.cuda.max_memory_allocated above the inputs).
"""
from __future__ import annotations

import argparse
import itertools

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from fastrnn.bench import common
from fastrnn.ops.attention import IMPLS, KINDS, attention, naive
from fastrnn import backends

QUICK = [  # kind, B, Tq, Tk, H
    ("additive", 64, 50, 50, 600),   # the target config (teacher forcing)
    ("additive", 64, 1, 50, 600),    # one decoder step
    ("dot", 64, 50, 50, 600),
    ("general", 64, 1, 50, 600),
    ("low_rank", 64, 50, 50, 600),
]


def add_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", default=True,
                   help="a few configs incl. the target one (default)")
    g.add_argument("--full", action="store_true",
                   help="every kind x B {16,64} x Tq {1,50} x Tk {50,400} x H {256,600,1024}")
    p.add_argument("--kinds", default=",".join(KINDS), help="comma-separated kinds to run")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile baseline")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64", "float16", "bfloat16"))
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--backend", default=None,
                   help="fastrnn backend(s) to time, comma-separated, e.g. cuda,triton (default: the picked one)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads for the run (CPU; 1 gives stable figures on a "
                        "shared, oversubscribed machine where OpenMP barriers stall)")


def _configs(args):
    kinds = [k for k in args.kinds.split(",") if k]
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise SystemExit(f"--kinds: unknown {bad}; expected some of {KINDS}")
    if args.full:
        return [(k, B, Tq, Tk, H) for k, B, Tq, Tk, H in
                itertools.product(kinds, (16, 64), (1, 50), (50, 400), (256, 600, 1024))]
    return [c for c in QUICK if c[0] in kinds]


def _inputs(kind, B, Tq, Tk, H, device, dtype, grad):
    """Query, keys, values of size H, a ragged mask and the kind's weights (rank H // 2)."""
    g = torch.Generator().manual_seed(0)

    def r(*s, scale=1.0):
        return (torch.randn(*s, generator=g) * scale).to(device=device, dtype=dtype).requires_grad_(grad)

    s = H ** -0.5
    w = {"dot": {}, "general": {"weight": r(H, H, scale=s)},
         "low_rank": {"u": r(H // 2, H, scale=s), "v": r(H // 2, H, scale=s)},
         "additive": {"w_query": r(H, H, scale=s), "w_key": r(H, H, scale=s), "v_score": r(H, scale=s)}}[kind]
    lengths = torch.randint(Tk // 2 + 1, Tk + 1, (B,), generator=g)
    mask = (torch.arange(Tk).unsqueeze(0) < lengths.unsqueeze(1)).to(device)
    return r(B, Tq, H, scale=s), r(B, Tk, H), r(B, Tk, H), mask, w


def _flops_bytes(kind, B, Tq, Tk, H, passes, esize):
    """Lower bound on the work of one call: GEMMs, and 2 flops per (i, j, h) for the additive
    score (its tanh counted free), all at the matmul rate."""
    rows = B * Tq
    score = {"additive": 2 * rows * Tk * H, "dot": 2 * rows * Tk * H,
             "general": 2 * rows * Tk * H + (2 * rows * H * H if Tq > 1 else 0),
             "low_rank": 2 * rows * Tk * H // 2 + 2 * (rows + (B * Tk if Tq > 1 else 0)) * H * H // 2}[kind]
    proj = {"additive": 2 * (rows + (B * Tk if Tq > 1 else 0)) * H * H}.get(kind, 0)
    fl = score + proj + 2 * rows * Tk * H + 5 * rows * Tk
    by = (rows * H * 2 + B * Tk * H * 3 + rows * Tk) * esize
    return fl * passes, by * passes


class _LiveBytes(TorchDispatchMode):
    """Tracks the bytes of live tensor storages created by the ops run under it; peak = max."""

    def __init__(self):
        super().__init__()
        from torch.multiprocessing.reductions import StorageWeakRef

        self._ref = StorageWeakRef
        self.live = {}
        self.peak = 0

    def _sweep(self):
        for k in [k for k, (ref, _) in self.live.items() if ref.expired()]:
            del self.live[k]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self._sweep()
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type == "cpu":
                st = t.untyped_storage()
                key = st.data_ptr()
                if key and key not in self.live:
                    self.live[key] = (self._ref(st), st.nbytes())
        self.peak = max(self.peak, sum(n for _, n in self.live.values()))
        return out


def _peak_mb(fn, device):
    if device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    mode = _LiveBytes()
    with mode:
        fn()
    return mode.peak / 2**20


def _decoder_step(kind, k, w):
    """A decoder step (Tq = 1) maps the keys once per sentence: key_proj replaces the key-side
    weight, computed outside the timed region as fastrnn.Attention.precompute does."""
    drop = {"general": "weight", "low_rank": "v", "additive": "w_key"}[kind]
    with torch.no_grad():
        kp = naive.project_keys(k, kind, w.get("weight"), w.get("v"), w.get("w_key"))
    kp.requires_grad_(k.requires_grad)
    w = {n: t for n, t in w.items() if n != drop}
    w["key_proj"] = kp
    return w


def _make_call(op, q, k, v, mask, w, kind, bwd):
    leaves = [t for t in [q, v, *w.values()] if t.requires_grad]
    if "key_proj" not in w and k.requires_grad:
        leaves.append(k)

    def call():
        ctx, wts = op(q, k, v, kind=kind, mask=mask, **w)
        if bwd:
            torch.autograd.grad(ctx.sum() + wts.sum(), leaves)
        return ctx
    return call


def run(args) -> list:
    device = args.device
    dtype = getattr(torch, args.dtype)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    compiled = {}
    flush = getattr(args, "flush", None) or (lambda rows: None)
    for kind, B, Tq, Tk, H in _configs(args):
        names = [n for n in (args.backend or "").split(",") if n] or [
            backends.pick("attention", IMPLS, torch.device(device), None, dtype=dtype, kind=kind, B=B, Tq=Tq,
                          Tk=Tk, Dq=H, Dk=H, D=H, Dv=H).name]

        for bwd in (False, True):
            q, k, v, mask, w = _inputs(kind, B, Tq, Tk, H, device, dtype, grad=bwd)
            step = Tq == 1 and kind != "dot"
            if step:
                w = _decoder_step(kind, k, w)
            cfg = {"kind": kind, "B": B, "Tq": Tq, "Tk": Tk, "H": H, "dtype": args.dtype,
                   "pass": "fwd+bwd" if bwd else "fwd", "key_proj": step,
                   "threads": torch.get_num_threads() if device == "cpu" else None}
            ctx = torch.enable_grad() if bwd else torch.no_grad()
            with ctx:
                f_eager = _make_call(naive.attention, q, k, v, mask, w, kind, bwd)
                tb = common.time_fn(f_eager, device, reps=args.reps, warmup=args.warmup)
                mem_b = _peak_mb(f_eager, device)
            fl, by = _flops_bytes(kind, B, Tq, Tk, H, 3 if bwd else 1, q.element_size())
            floor = common.floor_ms(fl, by, device, dtype)
            for backend in names:
                def fast(query, keys, values, _b=backend, **kw):  # low_rank has a weight named v
                    return attention(query, keys, values, backend=_b, **kw)

                with ctx:
                    f_fast = _make_call(fast, q, k, v, mask, w, kind, bwd)
                    t = common.time_fn(f_fast, device, reps=args.reps, warmup=args.warmup)
                    mem = _peak_mb(f_fast, device)
                extra = {"peak_mem_mb": round(mem, 2), "baseline_peak_mem_mb": round(mem_b, 2)}
                rows.append(common.row("attention", backend, "eager", cfg, t, tb, floor, **extra))
                flush(rows)
                print(f"# {cfg}: {backend} {t[0]:.2f} ms, eager {tb[0]:.2f} ms, "
                      f"peak {mem:.1f} MB vs {mem_b:.1f} MB", flush=True)
            if not args.no_compile:
                if kind not in compiled:
                    compiled[kind] = torch.compile(naive.attention, dynamic=False)
                with ctx:
                    f_comp = _make_call(compiled[kind], q, k, v, mask, w, kind, bwd)
                    f_comp()  # compile outside the timed region
                    tc = common.time_fn(f_comp, device, reps=args.reps, warmup=args.warmup)
                rows.append(common.row("attention", backend, "torch.compile", cfg, t, tc, floor,
                                       peak_mem_mb=round(mem, 2), baseline_peak_mem_mb=None))
                print(f"#   torch.compile {tc[0]:.2f} ms", flush=True)
    return rows
