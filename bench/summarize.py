"""Turn benchmark JSON (python -m fastrnn.bench ... --json FILE) into a markdown table, or a
ptxas -v build log into a per-kernel resource table.

    python bench/summarize.py rnn.json [more.json ...] [-o bench/results/rnn.md] [--max-rows N]
    python bench/summarize.py --ptxas build.log

JSON shape (shared/docs/DESIGN.md): {"env": {...}, "rows": [{"bench", "impl", "baseline",
"config": {...}, "median_ms", "baseline_median_ms", "ratio", "floor_ms"}]}.
"""
import argparse
import json
import re
import subprocess
import sys


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    if v is None:
        return "-"
    return str(v)


def _config(cfg):
    short = {"bidirectional": "bidir", "float16": "fp16", "bfloat16": "bf16", "float32": "fp32",
             "float64": "fp64"}
    parts = []
    for k, v in cfg.items():
        if isinstance(v, bool):
            if v:
                parts.append(short.get(k, k))
        else:
            parts.append(f"{k}={short.get(str(v), v)}")
    return " ".join(parts)


def paths_table(doc, max_rows=None):
    """bench/cuda_paths.py's rows: the two CUDA paths and cuDNN side by side."""
    env = doc.get("env", {})
    rows = doc.get("rows", [])
    lines = [f"Device: {env.get('device', '?')}; torch {env.get('torch', '?')}, CUDA {env.get('cuda', '?')}, "
             f"cuDNN {env.get('cudnn', '?')}", "",
             "| cell | dtype | H | B | T | pass | standard ms | persistent ms | auto ms (as run) | cuDNN ms "
             "| faster path | faster / cuDNN |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows if max_rows is None else rows[:max_rows]:
        s, p = r["standard_ms"], r["persistent_ms"]
        best, name = (p, "persistent") if p is not None and p < s else (s, "standard")
        lines.append("| " + " | ".join(_fmt(x) for x in (
            r["cell"], r["dtype"], r["H"], r["B"], r["T"], r["pass"], s, p, r["auto_ms"], r["cudnn_ms"], name,
            round(best / r["cudnn_ms"], 3))) + " |")
    return "\n".join(lines)


def table(doc, max_rows=None):
    env = doc.get("env", {})
    rows = doc.get("rows", [])
    if rows and "standard_ms" in rows[0]:
        return paths_table(doc, max_rows)
    lines = [f"Device: {env.get('device', '?')}; torch {env.get('torch', '?')}, CUDA {env.get('cuda', '?')}, "
             f"cuDNN {env.get('cudnn', '?')}", "",
             "| bench | impl | baseline | config | median ms | baseline ms | ratio | floor ms |",
             "|---|---|---|---|---|---|---|---|"]
    shown = rows if max_rows is None else rows[:max_rows]
    for r in shown:
        lines.append("| " + " | ".join(_fmt(x) for x in (
            r.get("bench"), r.get("impl"), r.get("baseline"), _config(r.get("config", {})), r.get("median_ms"),
            r.get("baseline_median_ms"), r.get("ratio"), r.get("floor_ms"))) + " |")
    if max_rows is not None and len(rows) > max_rows:
        lines.append(f"| ... {len(rows) - max_rows} more rows in the JSON | | | | | | | |")
    return "\n".join(lines)


def _demangle(names):
    try:
        out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True, timeout=20)
        dem = out.stdout.splitlines()
        if len(dem) == len(names):
            return dem
    except Exception:
        pass
    return names


def ptxas_table(text):
    """Per-kernel registers, spills, stack and static shared memory from a -Xptxas=-v log."""
    kernels = []
    cur = None
    for line in text.splitlines():
        m = re.search(r"Compiling entry function '(\w+)' for '(\w+)'", line)
        if m:
            cur = {"name": m.group(1), "arch": m.group(2)}
            kernels.append(cur)
            continue
        if cur is None:
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m:
            cur["stack"], cur["spill_st"], cur["spill_ld"] = m.groups()
        m = re.search(r"Used (\d+) registers", line)
        if m:
            cur["regs"] = m.group(1)
            m2 = re.search(r"(\d+) bytes smem", line)
            cur["smem"] = m2.group(1) if m2 else "0"
    if not kernels:
        return "no ptxas -v output found (build with FASTRNN_PTXAS_VERBOSE=1)"
    names = _demangle([k["name"] for k in kernels])
    lines = ["| file | kernel | arch | registers | stack B | spill st/ld B | static smem B |",
             "|---|---|---|---|---|---|---|"]
    seen = set()
    for k, n in zip(kernels, names):
        n = n.replace("(anonymous namespace)::", "").replace("fastrnn::", "")
        n = re.sub(r"^void ", "", re.sub(r"\(.*", "", n))
        n = re.sub(r"\bc10::", "", n)
        m = re.search(r"_\d+_(\w+?)_cu_", k["name"])
        src = m.group(1) + ".cu" if m else "?"
        key = (src, n, k["arch"])
        if key in seen:
            continue
        seen.add(key)
        lines.append(f"| {src} | {n} | {k['arch']} | {k.get('regs', '?')} | {k.get('stack', '?')} | "
                     f"{k.get('spill_st', '?')}/{k.get('spill_ld', '?')} | {k.get('smem', '?')} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json", nargs="*", help="bench JSON files")
    ap.add_argument("-o", "--output", help="write the markdown here (e.g. bench/results/rnn.md)")
    ap.add_argument("--max-rows", type=int, default=None)
    ap.add_argument("--ptxas", metavar="LOG", help="summarize a -Xptxas=-v build log instead")
    ap.add_argument("--plot", metavar="PNG", help="also draw the rnn rows' speedup over the baseline vs B")
    args = ap.parse_args(argv)
    if args.ptxas:
        with open(args.ptxas, errors="replace") as f:
            md = ptxas_table(f.read())
    else:
        if not args.json:
            ap.error("give bench JSON files or --ptxas LOG")
        parts = []
        for path in args.json:
            with open(path) as f:
                parts.append(table(json.load(f), args.max_rows))
        md = "\n\n".join(parts)
        if args.plot:
            from fastrnn.bench.rnn import plot
            rows = []
            for path in args.json:
                with open(path) as f:
                    rows += [r for r in json.load(f)["rows"] if r.get("bench") == "rnn"]
            plot(rows, args.plot)
    if args.output:
        with open(args.output, "w") as f:
            f.write(md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
