"""Part 2 of the translation example: NMT commands, registered into unmt.py's CLI.

    train      unsupervised NMT (Artetxe et al. 2017) and its variants      (train.py)
    translate  raw sentences on stdin -> translations on stdout           (translate.py)
    evaluate   sacrebleu BLEU and chrF on the test set                      (translate.py)
    reproduce  the paper's table: --preset demo|cpu|full                     (reproduce.py)

`python examples/unmt/unmt.py <command> ...` is the entry point; this file also runs alone
(`python examples/unmt/nmt.py <command> ...`) with the NMT commands only.
"""
import argparse
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import reproduce  # noqa: E402
import train  # noqa: E402
import translate  # noqa: E402


def register(subparsers) -> None:
    """Add train, translate, evaluate and reproduce to unmt.py's subparsers."""
    train.add_args(subparsers)
    translate.add_args(subparsers)
    reproduce.add_args(subparsers)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="nmt.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
