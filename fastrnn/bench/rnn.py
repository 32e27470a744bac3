"""rnn: fastrnn LSTM/GRU kernels vs torch.nn (cuDNN on the GPU), forward and forward+backward.

--device cpu: fastrnn.ops.lstm/gru with backend "cpu" vs torch.nn.LSTM/GRU, fp32, I = H,
(B, T, H) in {(1, 64, 256), (32, 64, 256), (64, 128, 512)}.
--device cuda: each provider of --impl (cuda, triton) vs cuDNN over --matrix quick|full
(full: LSTM and GRU; B in {1, 3, 16, 64, 256}; H in {256, 768, 1024}; T in {1, 128, 1024};
fp16, bf16, fp32; fwd and fwd+bwd), plus 2-layer bidirectional and packed batches through the
modules fastrnn.LSTM/GRU(..., backend=impl) vs torch.nn.LSTM/GRU.
Both sides get the same weights (taken from one torch.nn module) and the same inputs; the
backward computes the gradients of x and every weight.
"""
from __future__ import annotations

import itertools
from typing import List, Optional

import torch

import fastrnn
from fastrnn.bench import common

CPU_CONFIGS = [(1, 64, 256), (32, 64, 256), (64, 128, 512)]  # (B, T, H)
CUDA_MATRIX = {
    "quick": {"B": [1, 16, 64], "H": [256, 1024], "T": [128], "dtype": ["float16", "float32"]},
    "full": {"B": [1, 3, 16, 64, 256], "H": [256, 768, 1024], "T": [1, 128, 1024],
             "dtype": ["float16", "bfloat16", "float32"]},
    # Sized for one lent-GPU call (bench/device_check.sh): the grid at T=128, plus issue 3's target
    # points (B=16 T=1024 H=768 fp16 fwd+bwd; bf16 at B in {1, 3}), each as (cell, dtype, H, T, B, pass).
    "device": {"B": [1, 3, 16, 64], "H": [256, 768, 1024], "T": [128], "dtype": ["float16", "float32"],
               "extra": [(c, dt, 768, T, B, p) for c in ("LSTM", "GRU") for dt, T, Bs, ps in (
                   ("float16", 1024, (16,), ("fwd+bwd",)), ("bfloat16", 128, (1, 3), ("fwd", "fwd+bwd")))
                   for B in Bs for p in ps]},
}
GATES = {"LSTM": 4, "GRU": 3}


def add_args(p) -> None:
    p.add_argument("--matrix", choices=tuple(CUDA_MATRIX), default="quick",
                   help="GPU configurations (ignored on the CPU): quick, device (one lent-GPU call), "
                        "or full (issue 3's matrix)")
    p.add_argument("--impl", default=None,
                   help="comma-separated providers: cpu on the CPU (default); cuda,triton on the GPU (default)")
    p.add_argument("--cell", default="LSTM,GRU", help="comma-separated: LSTM,GRU")
    p.add_argument("--pass", dest="passes", default="fwd,fwd+bwd", help="comma-separated: fwd,fwd+bwd")
    p.add_argument("--no-modules", action="store_true",
                   help="GPU: skip the 2-layer bidirectional and packed module rows")
    p.add_argument("--plot", metavar="FILE.png", help="plot speedup over the baseline vs batch size")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads for both sides (default: torch's choice); 1 gives steadier "
                        "ratios on a machine shared with other jobs")


# --- FLOPs and bytes for the physical floor ------------------------------------------------

def flops_bytes(cell: str, B: int, T: int, I: int, H: int, esize: int, bwd: bool):
    """Matmul FLOPs and the bytes that must move at least once (weights, x, y, gates)."""
    G = GATES[cell] * H
    f = 2.0 * T * B * G * (I + H)                 # input projection + recurrent GEMMs
    by = esize * (G * (I + H) + T * B * (I + H) + T * B * G)
    if bwd:
        f *= 3                                    # dX/dh GEMMs + dW GEMMs
        by *= 3
    return f, by


# --- the two sides of one configuration ----------------------------------------------------

def _ref_module(cell, I, H, device, dtype, layers=1, bidirectional=False):
    torch.manual_seed(0)
    cls = torch.nn.LSTM if cell == "LSTM" else torch.nn.GRU
    return cls(I, H, num_layers=layers, bidirectional=bidirectional).to(device=device, dtype=dtype)


def _op_fn(cell, mod, impl, x, h0, c0, bwd, gy):
    """fastrnn.ops.<cell> with the module's layer-0 weights."""
    w = [mod.weight_ih_l0, mod.weight_hh_l0, mod.bias_ih_l0, mod.bias_hh_l0]
    inputs = [x] + w

    def run():
        if cell == "LSTM":
            y, _ = fastrnn.ops.lstm(x, h0, c0, *w, backend=impl)
        else:
            y, _ = fastrnn.ops.gru(x, h0, *w, backend=impl)
        if bwd:
            torch.autograd.grad(y, inputs, gy)
        return y

    return run


def _module_fn(mod, x, hx, bwd, gy, params, leaf=None):
    """mod(x, hx), and with bwd the grads of ``leaf`` (x, or the data of a packed x) and params."""
    inputs = [x if leaf is None else leaf] + params

    def run():
        y, _ = mod(x, hx)
        if bwd:
            out = y.data if isinstance(y, torch.nn.utils.rnn.PackedSequence) else y
            torch.autograd.grad(out, inputs, gy)
        return y

    return run


def _time_pair(fast, base, device, big):
    """Median (ms, spread) of both sides. Small configs are timed twice, interleaved, keeping
    each side's better median, so that a burst of load from elsewhere on a shared machine does not
    hit only one side; big ones (about a second a call on the CPU) once, to bound the run time."""
    if big:
        kw = dict(device=device, reps=3, warmup=1, max_seconds=1.0)
        return common.time_fn(fast, **kw), common.time_fn(base, **kw)
    kw = dict(device=device, reps=20, warmup=3, max_seconds=1.5)
    a1, b1 = common.time_fn(fast, **kw), common.time_fn(base, **kw)
    a2, b2 = common.time_fn(fast, **kw), common.time_fn(base, **kw)
    return min(a1, a2), min(b1, b2)


def _single_layer(cell, impl, B, T, H, dtype, passname, device, baseline):
    I = H
    mod = _ref_module(cell, I, H, device, dtype)
    bwd = passname == "fwd+bwd"
    g = torch.Generator(device="cpu").manual_seed(1)
    x = torch.randn(T, B, I, generator=g).to(device=device, dtype=dtype).requires_grad_(bwd)
    h0 = torch.zeros(B, H, device=device, dtype=dtype)
    c0 = torch.zeros(B, H, device=device, dtype=dtype) if cell == "LSTM" else None
    gy = torch.randn(T, B, H, generator=g).to(device=device, dtype=dtype)
    if not bwd:
        for p in mod.parameters():
            p.requires_grad_(False)
    fast = _op_fn(cell, mod, impl, x, h0, c0, bwd, gy)
    hx = (h0.unsqueeze(0), c0.unsqueeze(0)) if cell == "LSTM" else h0.unsqueeze(0)
    base = _module_fn(mod, x, hx, bwd, gy, list(mod.parameters()))
    try:
        fast()
    except RuntimeError as exc:  # the provider refuses this configuration
        print(f"# skip {impl} {cell} B={B} T={T} H={H} {dtype} {passname}: {exc}")
        return None
    big = device == "cpu" and B * T * H * H >= 64 * 128 * 512 * 512
    with torch.set_grad_enabled(bwd):
        t, tb = _time_pair(fast, base, device, big)
    esize = torch.tensor([], dtype=dtype).element_size()
    fl, by = flops_bytes(cell, B, T, I, H, esize, bwd)
    config = {"cell": cell, "B": B, "T": T, "H": H, "I": I, "dtype": str(dtype).replace("torch.", ""),
              "layers": 1, "bidirectional": False, "packed": False, "pass": passname}
    return common.row("rnn", impl, baseline, config, t, tb, common.floor_ms(fl, by, device, dtype),
                      us_per_step=round(t[0] * 1e3 / T, 2), baseline_us_per_step=round(tb[0] * 1e3 / T, 2),
                      threads=torch.get_num_threads())


def _module_case(cell, impl, B, T, H, dtype, passname, layers, bidirectional, packed, device):
    """fastrnn.LSTM/GRU(..., backend=impl) vs torch.nn on the same state_dict."""
    I = H
    ref = _ref_module(cell, I, H, device, dtype, layers, bidirectional)
    cls = fastrnn.LSTM if cell == "LSTM" else fastrnn.GRU
    try:
        fast_mod = cls(I, H, num_layers=layers, bidirectional=bidirectional, backend=impl,
                       device=device, dtype=dtype)
    except TypeError as exc:
        print(f"# skip module rows: fastrnn.{cell} does not take backend= yet ({exc})")
        return None
    fast_mod.load_state_dict(ref.state_dict())
    bwd = passname == "fwd+bwd"
    g = torch.Generator(device="cpu").manual_seed(2)
    x = torch.randn(T, B, I, generator=g).to(device=device, dtype=dtype).requires_grad_(bwd)
    D = 2 if bidirectional else 1
    if packed:
        lengths = torch.randint(max(1, T // 2), T + 1, (B,), generator=g)
        lengths[0] = T
        pk = torch.nn.utils.rnn.pack_padded_sequence(x.detach(), lengths, enforce_sorted=False)
        leaf = pk.data.requires_grad_(bwd)  # a leaf, so every timed call can backward to it
        inp = torch.nn.utils.rnn.PackedSequence(leaf, pk.batch_sizes, pk.sorted_indices, pk.unsorted_indices)
        gy = torch.randn(leaf.shape[0], D * H, generator=g).to(device=device, dtype=dtype)
    else:
        inp = leaf = x
        gy = torch.randn(T, B, D * H, generator=g).to(device=device, dtype=dtype)
    for m in (ref, fast_mod):
        for p in m.parameters():
            p.requires_grad_(bwd)
    fast = _module_fn(fast_mod, inp, None, bwd, gy, list(fast_mod.parameters()), leaf)
    base = _module_fn(ref, inp, None, bwd, gy, list(ref.parameters()), leaf)
    try:
        fast()
    except RuntimeError as exc:
        print(f"# skip {impl} module {cell} B={B} T={T} H={H} {dtype}: {exc}")
        return None
    with torch.set_grad_enabled(bwd):
        t, tb = _time_pair(fast, base, device, big=False)
    esize = torch.tensor([], dtype=dtype).element_size()
    fl, by = flops_bytes(cell, B, T, I, H, esize, bwd)
    fl, by = fl * layers * D, by * layers * D  # layer 2 sees 2H inputs: a slight underestimate
    config = {"cell": cell, "B": B, "T": T, "H": H, "I": I, "dtype": str(dtype).replace("torch.", ""),
              "layers": layers, "bidirectional": bidirectional, "packed": packed, "pass": passname}
    return common.row("rnn", impl, "cudnn", config, t, tb, common.floor_ms(fl, by, device, dtype),
                      us_per_step=round(t[0] * 1e3 / T, 2), baseline_us_per_step=round(tb[0] * 1e3 / T, 2),
                      threads=torch.get_num_threads())


# --- entry point ----------------------------------------------------------------------------

def _split(s: str) -> List[str]:
    return [v.strip() for v in s.split(",") if v.strip()]


def run(args) -> List[dict]:
    cells = _split(args.cell)
    passes = _split(args.passes)
    for c in cells:
        if c not in GATES:
            raise SystemExit(f"--cell takes LSTM,GRU; got {c!r}")
    for p in passes:
        if p not in ("fwd", "fwd+bwd"):
            raise SystemExit(f"--pass takes fwd,fwd+bwd; got {p!r}")
    if args.threads:
        torch.set_num_threads(args.threads)
    rows: List[dict] = []
    if args.device == "cpu":
        impls = _split(args.impl or "cpu")
        for impl, cell, (B, T, H), passname in itertools.product(impls, cells, CPU_CONFIGS, passes):
            r = _single_layer(cell, impl, B, T, H, torch.float32, passname, "cpu", "torch.nn")
            if r is not None:
                rows.append(r)
                print(f"# {cell} B={B} T={T} H={H} {passname}: {r['median_ms']:.2f} ms vs "
                      f"{r['baseline_median_ms']:.2f} ms (ratio {r['ratio']})", flush=True)
    else:
        impls = _split(args.impl or "cuda,triton")
        m = CUDA_MATRIX[args.matrix]
        flush = getattr(args, "flush", None) or (lambda rows: None)
        for impl in impls:
            grid = list(itertools.product(cells, m["dtype"], m["H"], m["T"], m["B"], passes))
            grid += [e for e in m.get("extra", []) if e[0] in cells and e[5] in passes]
            for cell, dt, H, T, B, passname in grid:
                r = _single_layer(cell, impl, B, T, H, getattr(torch, dt), passname, "cuda", "cudnn")
                if r is not None:
                    rows.append(r)
                    flush(rows)  # a run stopped at its time limit keeps what it measured
            if not args.no_modules:
                for cell, (layers, bidi, packed) in itertools.product(cells, [(2, True, False), (1, False, True)]):
                    for dt in ("float16", "float32"):
                        r = _module_case(cell, impl, 16, 128, 512, getattr(torch, dt), "fwd+bwd", layers, bidi,
                                         packed, "cuda")
                        if r is not None:
                            rows.append(r)
                            flush(rows)
    if args.plot:
        plot(rows, args.plot)
    return rows


def plot(rows: List[dict], path: str) -> Optional[str]:
    """Speedup over the baseline (1 / ratio) vs batch size, one panel per cell, one line per
    (provider, dtype, H, T, pass) of the single-layer rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    single = [r for r in rows if r["config"]["layers"] == 1 and not r["config"]["packed"] and r["ratio"]]
    cells = sorted({r["config"]["cell"] for r in single})
    if not cells:
        print("# nothing to plot")
        return None
    fig, axes = plt.subplots(1, len(cells), figsize=(7 * len(cells), 5), squeeze=False)
    for ax, cell in zip(axes[0], cells):
        lines = {}
        for r in single:
            c = r["config"]
            if c["cell"] != cell:
                continue
            key = (r["impl"], c["dtype"], c["H"], c["T"], c["pass"])
            lines.setdefault(key, []).append((c["B"], 1.0 / r["ratio"]))
        for key, pts in sorted(lines.items()):
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o",
                    label="{} {} H={} T={} {}".format(*key))
        ax.axhline(1.0, color="gray", lw=0.8, ls="--")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size B")
        ax.set_ylabel(f"speedup over {single[0]['baseline']} (x)")
        ax.set_title(cell)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"# wrote {path}")
    return path
