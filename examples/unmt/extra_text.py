"""`extra-text`: out-of-domain monolingual text for the embeddings, from LibreOffice's help.

DATA.md: the ceiling of the cross-lingual embeddings is the size of one small corpus, and more
distinct monolingual text per language is the strongest lever. Debian's libreoffice-help-<lang>
packages hold the same help pages in every language, so they are parallel: like the Bible's
chapters, the pages are split in two disjoint halves by a hash of their path, the source
language takes one half and English the other, and no paragraph and its translation both reach
training. The text feeds the skip-gram embeddings only (`embed` reads `extra.<l>.tok` when it is
there); the NMT models still train on the Bible's monolingual sides.

Where the pages come from, first found wins: `--help-dir DIR` (holding `<code>/text/**.html`),
/usr/share/libreoffice/help (the packages installed), or `apt-get download` of the packages
into `<work>/cache/` unpacked with `dpkg-deb -x` (no root needed, Debian's archive only).
"""
from __future__ import annotations

import html.parser
import shutil
import subprocess
import tempfile
import zlib
from pathlib import Path

from tqdm import tqdm

from common import check_pair, data_dir, outputs_done, tokenize, write_json, write_lines

SYSTEM_HELP = Path("/usr/share/libreoffice/help")
HELP_CODE = {"en": "en-US", "de": "de", "fr": "fr"}    # help folder and package suffix
PACKAGE = "libreoffice-help-{}"
BLOCKS = ("p", "h1", "h2", "h3", "h4", "h5", "h6", "td", "li")
MIN_WORDS = 3


class _Paragraphs(html.parser.HTMLParser):
    """Texts of the help's numbered blocks (ids par_*, hd_*), scripts and styles left out."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self._buf: list[str] = []
        self._open = False
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self._skip += 1
        elif tag in BLOCKS and (dict(attrs).get("id") or "").startswith(("par_", "hd_")):
            self._flush()
            self._open = True

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._skip = max(0, self._skip - 1)
        elif tag in BLOCKS:
            self._flush()

    def handle_data(self, data):
        if self._open and not self._skip:
            self._buf.append(data)

    def _flush(self):
        text = " ".join("".join(self._buf).split())
        if self._open and len(text.split()) >= MIN_WORDS:
            self.out.append(text)
        self._buf, self._open = [], False

    def close(self):
        super().close()
        self._flush()


def paragraphs(page: str) -> list[str]:
    p = _Paragraphs()
    p.feed(page)
    p.close()
    return p.out


def side(rel_path: str, lang: str, src: str) -> bool:
    """Whether the page at rel_path (the same in every language) belongs to lang's half:
    the source language takes odd crc32 values, English the even ones (disjoint halves)."""
    odd = zlib.crc32(rel_path.encode()) % 2 == 1
    return odd if lang == src else not odd


def fetch_help(lang: str, cache: Path) -> Path:
    """Unpack libreoffice-help-<lang> from Debian's archive into cache; -> its help root."""
    code = HELP_CODE[lang]
    root = cache / "libreoffice" / "usr/share/libreoffice/help"
    if (root / code / "text").is_dir():
        return root
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise SystemExit(f"no LibreOffice help for {lang}: install it (apt-get install "
                         f"{PACKAGE.format(code.lower())}) or pass --help-dir DIR")
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        pkg = PACKAGE.format(code.lower())
        r = subprocess.run(["apt-get", "download", pkg], cwd=tmp, capture_output=True, text=True)
        debs = list(Path(tmp).glob("*.deb"))
        if r.returncode != 0 or not debs:
            raise SystemExit(f"apt-get download {pkg} failed ({r.stderr.strip()[-300:]}); "
                             "run apt-get update, install the package, or pass --help-dir DIR")
        unpacked = Path(tmp) / "x"
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(unpacked)], check=True)
        target = cache / "libreoffice"
        for item in unpacked.rglob("*"):
            dest = target / item.relative_to(unpacked)
            if item.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
            elif not dest.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(item), dest)
    if not (root / code / "text").is_dir():
        raise SystemExit(f"{pkg} holds no {code}/text folder under {root}")
    return root


def help_root(lang: str, help_dir: str | None, cache: Path) -> Path:
    code = HELP_CODE[lang]
    for root in ([Path(help_dir)] if help_dir else []) + [SYSTEM_HELP]:
        if (root / code / "text").is_dir():
            return root
    if help_dir:
        raise SystemExit(f"--help-dir {help_dir}: no {code}/text folder in it")
    return fetch_help(lang, cache)


def extra_text(pair: str, work: Path, help_dir: str | None = None, force: bool = False) -> dict:
    src, tgt = check_pair(pair)
    d = data_dir(work)
    outputs = [d / f"extra.{l}.tok" for l in (src, tgt)] + [d / "extra.json"]
    if outputs_done(outputs, force):
        print(f"extra-text: {d} already has it (use --force to redo)")
        return {}
    if not (d / "meta.json").is_file():
        raise SystemExit(f"{d} has no prepared data: run `unmt.py prepare --pair {pair}` first")
    meta = {"source": "LibreOffice help (Debian libreoffice-help-*)",
            "split": {src: "pages of odd crc32(path)", tgt: "pages of even crc32(path)"}, "counts": {}}
    for lang in (src, tgt):
        code = HELP_CODE[lang]
        text_dir = help_root(lang, help_dir, work / "cache") / code / "text"
        pages = sorted(p for p in text_dir.rglob("*.html")
                       if side(p.relative_to(text_dir).as_posix(), lang, src))
        seen, lines = set(), []
        for page in tqdm(pages, desc=f"help pages {lang}", unit="page"):
            for t in paragraphs(page.read_text(encoding="utf-8", errors="replace")):
                if t not in seen:
                    seen.add(t)
                    lines.append(tokenize(t, lang))
        if not lines:
            raise SystemExit(f"no help text found under {text_dir}")
        write_lines(d / f"extra.{lang}.tok", lines)
        meta["counts"][lang] = {"pages": len(pages), "paragraphs": len(lines),
                                "tokens": sum(len(x.split()) for x in lines)}
    write_json(d / "extra.json", meta)
    print("extra-text: " + ", ".join(f"{l} {c['paragraphs']} paragraphs ({c['tokens']} tokens)"
                                     for l, c in meta["counts"].items()))
    return meta
