"""Shared benchmark plumbing: environment header, timing, rows, tables, JSON (DESIGN.md).

Every bench module exposes ``add_args(parser)`` and ``run(args) -> list[dict]`` producing rows of
the shape {"bench", "impl", "baseline", "config", "median_ms", "baseline_median_ms", "ratio",
"floor_ms", ...}; this module prints and saves them.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from typing import Callable, Dict, List, Optional

import torch

# Rough peak figures for the physical floor: the larger of FLOPs / peak and bytes / bandwidth.
PEAKS = {
    # name fragment: (fp32 FLOP/s, fp16/bf16 tensor FLOP/s, bytes/s)
    "H100": (67e12, 989e12, 3.35e12),
    "H200": (67e12, 989e12, 4.8e12),
}


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def env(device: str) -> Dict[str, str]:
    e = {
        "device": torch.cuda.get_device_name() if device == "cuda" else f"cpu: {cpu_name()}",
        "torch": torch.__version__,
        "cuda": str(torch.version.cuda),
        "cudnn": str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else "none",
        "cpu": f"{cpu_name()} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)",
    }
    if device == "cuda":
        free, total = torch.cuda.mem_get_info()
        e["gpu_memory_gib"] = f"{total / 2**30:.0f}"
        e["driver"] = _driver_version()
    return e


def _driver_version() -> str:
    try:
        import subprocess
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip()
    except Exception:
        return "unknown"


def peak_for(device: str, dtype: torch.dtype):
    """(FLOP/s, bytes/s) for the floor, or a measured CPU matmul rate when on the CPU."""
    if device == "cuda":
        name = torch.cuda.get_device_name()
        for k, (f32, f16, bw) in PEAKS.items():
            if k in name:
                return (f16 if dtype in (torch.float16, torch.bfloat16) else f32), bw
        return 50e12, 2e12
    return _cpu_matmul_rate(dtype), _cpu_bandwidth()


_cpu_rate = {}
_cpu_bw = []


def _cpu_bandwidth() -> float:
    """Measured bytes/s of reading memory on this CPU (a sum over 256 MB, torch's threads): the
    practical ceiling for weight-bound steps such as B=1 decoding (47 GB/s on the 2-core dev
    machine with 2 threads, 23 GB/s with one)."""
    if not _cpu_bw:
        a = torch.ones(64 * 2 ** 20)
        a.sum()
        t = time_fn(lambda: a.sum(), device="cpu", reps=5)[0]
        _cpu_bw.append(a.numel() * 4 / (t / 1e3))
    return _cpu_bw[0]


def _cpu_matmul_rate(dtype) -> float:
    """Measured dense matmul FLOP/s on this CPU: the practical compute ceiling."""
    dt = torch.float32 if dtype not in (torch.float64,) else dtype
    if dt not in _cpu_rate:
        a = torch.randn(512, 512, dtype=dt)
        b = torch.randn(512, 512, dtype=dt)
        for _ in range(3):
            a @ b
        t = time_fn(lambda: a @ b, device="cpu", reps=10)[0]
        _cpu_rate[dt] = 2 * 512 ** 3 / (t / 1e3)
    return _cpu_rate[dt]


def floor_ms(flops: float, bytes_moved: float, device: str, dtype: torch.dtype) -> float:
    fl, bw = peak_for(device, dtype)
    return max(flops / fl, bytes_moved / bw) * 1e3


def time_fn(fn: Callable[[], object], device: str, reps: int = 20, warmup: int = 3,
            max_seconds: float = 5.0):
    """Median and interquartile spread in ms. On CUDA uses triton.testing.do_bench when present."""
    if device == "cuda":
        try:
            from triton.testing import do_bench
            # warm-up and repetitions in milliseconds of GPU time; short, so that a whole matrix
            # fits one lent-GPU call (each config is timed twice, interleaved with its baseline)
            q = do_bench(fn, warmup=10, rep=50, quantiles=[0.5, 0.25, 0.75])
            return q[0], q[2] - q[1]
        except Exception:
            pass
    for _ in range(warmup):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    times = []
    start = time.perf_counter()
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
        if time.perf_counter() - start > max_seconds and len(times) >= 3:
            break
    q = statistics.quantiles(times, n=4) if len(times) >= 2 else [times[0]] * 3
    return statistics.median(times), q[2] - q[0]


def row(bench: str, impl: str, baseline: str, config: dict, t, tb, floor: Optional[float], **extra) -> dict:
    """One result row; t/tb are (median, spread) tuples of fastrnn and the baseline."""
    r = {"bench": bench, "impl": impl, "baseline": baseline, "config": config,
         "median_ms": round(t[0], 4), "spread_ms": round(t[1], 4),
         "baseline_median_ms": round(tb[0], 4), "baseline_spread_ms": round(tb[1], 4),
         "ratio": round(t[0] / tb[0], 3) if tb[0] > 0 else None,
         "floor_ms": round(floor, 4) if floor is not None else None}
    r.update(extra)
    return r


def print_header(e: Dict[str, str]) -> None:
    print("# fastrnn benchmark")
    for k, v in e.items():
        print(f"#   {k}: {v}")


def print_table(rows: List[dict]) -> None:
    if not rows:
        print("(no rows)")
        return
    keys = list(rows[0]["config"].keys())
    head = keys + ["impl", "ms", "±", "baseline", "base ms", "ratio", "floor ms"]
    lines = [head]
    for r in rows:
        c = r["config"]
        lines.append([str(c.get(k, "")) for k in keys] + [
            r["impl"], f"{r['median_ms']:.3f}", f"{r.get('spread_ms', 0):.3f}", r["baseline"],
            f"{r['baseline_median_ms']:.3f}", f"{r['ratio']:.2f}" if r["ratio"] is not None else "-",
            f"{r['floor_ms']:.3f}" if r.get("floor_ms") is not None else "-"])
    widths = [max(len(l[i]) for l in lines) for i in range(len(head))]
    for j, l in enumerate(lines):
        print("  ".join(s.rjust(w) for s, w in zip(l, widths)))
        if j == 0:
            print("  ".join("-" * w for w in widths))


def save_json(path: str, e: Dict[str, str], rows: List[dict]) -> None:
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"env": e, "rows": rows}, f, indent=1)
    os.replace(tmp, path)
