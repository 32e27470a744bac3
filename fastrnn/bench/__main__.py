"""python -m fastrnn.bench rnn|attention|decode [--device cpu|cuda] [--json FILE] [...]"""
import argparse
import importlib
import sys

from fastrnn.bench import common

BENCHES = ("rnn", "attention", "decode")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m fastrnn.bench", description=__doc__)
    sub = p.add_subparsers(dest="bench", required=True)
    mods = {}
    for name in BENCHES:
        try:
            mods[name] = importlib.import_module(f"fastrnn.bench.{name}")
        except ImportError as exc:  # a bench whose module has not landed yet
            sp = sub.add_parser(name, help=f"(unavailable: {exc})")
            continue
        sp = sub.add_parser(name, help=mods[name].__doc__.splitlines()[0] if mods[name].__doc__ else name)
        sp.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
        sp.add_argument("--json", metavar="FILE", help="write {env, rows} to FILE")
        mods[name].add_args(sp)
    args = p.parse_args(argv)
    if args.bench not in mods:
        p.error(f"benchmark {args.bench!r} is not available in this build")
    import torch
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda needs a CUDA GPU")
    e = common.env(args.device)
    common.print_header(e)
    # Benchmarks that take long may call args.flush(rows) after each row: the JSON then holds
    # every finished row even when the run is stopped (a time limit on a lent GPU).
    args.flush = (lambda rows: common.save_json(args.json, e, rows)) if args.json else None
    rows = mods[args.bench].run(args)
    common.print_table(rows)
    if args.json:
        common.save_json(args.json, e, rows)
        print(f"# wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
