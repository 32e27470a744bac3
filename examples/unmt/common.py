"""Helpers shared by both halves of the translation example (data/embeddings/baseline and NMT).

Paths follow the contract: <work>/data, <work>/emb, <work>/baseline, with <work> defaulting to
runs/work/<pair> at the repository root. Every output goes through `atomic_write`, so an
interrupted step leaves either the old file or nothing, never half a file, and "output exists"
is a safe test for "step done".
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import tempfile
from pathlib import Path

import torch

LANGS = ("de", "fr", "en")
PAIRS = ("de-en", "fr-en")
REPO_ROOT = Path(__file__).resolve().parents[2]
RUNS_DIR = REPO_ROOT / "runs"


def check_pair(pair: str) -> tuple[str, str]:
    """'de-en' -> ('de', 'en'); the first language is the one paired with English."""
    if pair not in PAIRS:
        raise ValueError(f"--pair must be one of {', '.join(PAIRS)}, got {pair!r}")
    src, tgt = pair.split("-")
    return src, tgt


def work_dir(pair: str, work: str | os.PathLike | None = None) -> Path:
    check_pair(pair)
    return Path(work) if work is not None else RUNS_DIR / "work" / pair


def data_dir(work: Path) -> Path:
    return Path(work) / "data"


def emb_dir(work: Path) -> Path:
    return Path(work) / "emb"


def baseline_dir(work: Path) -> Path:
    return Path(work) / "baseline"


_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8"):
    """Open a temporary file next to `path`, yield it, and move it onto `path` only when the
    block finishes without an exception (os.replace is atomic on one file system)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    binary = "b" in mode
    try:
        with os.fdopen(fd, mode, encoding=None if binary else encoding) as f:
            yield f
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the usual mode
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_lines(path: str | os.PathLike, lines) -> None:
    with atomic_write(path) as f:
        for line in lines:
            f.write(line)
            f.write("\n")


def read_lines(path: str | os.PathLike) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def write_json(path: str | os.PathLike, obj) -> None:
    with atomic_write(path) as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def save_torch(path: str | os.PathLike, obj) -> None:
    with atomic_write(path, "wb") as f:
        torch.save(obj, f)


def load_mapped(path: str | os.PathLike) -> tuple[list[str], torch.Tensor]:
    """Read <work>/emb/mapped.<l>.pt: (words by descending frequency, FloatTensor [V, 300])."""
    obj = torch.load(path, map_location="cpu", weights_only=True)
    words, vectors = obj["words"], obj["vectors"]
    if vectors.ndim != 2 or vectors.shape[0] != len(words):
        raise ValueError(f"{path}: expected vectors [len(words), dim], got {tuple(vectors.shape)} "
                         f"for {len(words)} words")
    return list(words), vectors.float()


def outputs_done(paths, force: bool = False) -> bool:
    """True when every output exists and --force was not given (the step may be skipped)."""
    return not force and all(Path(p).exists() for p in paths)


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@functools.lru_cache(maxsize=None)
def _moses(lang: str):
    from sacremoses import MosesDetokenizer, MosesPunctNormalizer, MosesTokenizer
    return MosesPunctNormalizer(lang=lang), MosesTokenizer(lang=lang), MosesDetokenizer(lang=lang)


def tokenize(text: str, lang: str, lower: bool = True) -> str:
    """Moses-normalise and tokenize one sentence; tokens joined by single spaces."""
    norm, tok, _ = _moses(lang)
    out = " ".join(tok.tokenize(norm.normalize(text), escape=False))
    return out.lower() if lower else out


def detokenize(tokens: list[str] | str, lang: str) -> str:
    if isinstance(tokens, str):
        tokens = tokens.split()
    return _moses(lang)[2].detokenize(tokens)
