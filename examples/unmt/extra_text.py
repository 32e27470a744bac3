"""`extra-text`: out-of-domain monolingual text for the embeddings, from translated manuals.

DATA.md: the ceiling of the cross-lingual embeddings is the size of one small corpus, and more
distinct monolingual text per language is the strongest lever. Debian packages several manuals in
English, German and French, each page the same in every language (SOURCES; the man pages
differ between languages):

- `libreoffice`: LibreOffice help (libreoffice-help-<lang>), numbered paragraphs only;
- `gimp`: the GIMP user manual (gimp-help-<lang>);
- `handbook`: The Debian Administrator's Handbook (debian-handbook, all languages in one);
- `debref`: Debian Reference (debian-reference-<lang>);
- `gnome`: GNOME's help (gnome-user-docs, Mallard pages);
- `install`: the Debian installation guide (installation-guide-amd64);
- `devref`: the Debian Developer's Reference (developers-reference-<lang>);
- `lilypond`: the LilyPond manuals (lilypond-doc-html-<lang>; English untagged beside x.de.html);
- `kicad`: the KiCad manuals (kicad-doc-<lang>);

and, since session 11, more manuals, help and books (about 250 MB more to download):

- `gnome-apps`: the help of about 60 GNOME applications (Mallard pages, a few DocBook);
- `kde`: KDE's handbooks (DocBook, read with DOCBOOK_BLOCKS; about 60 packages, 170 MB);
- `lyx`: LyX's manuals (.lyx files, read by `lyx_paragraphs`);
- `harden`: the Securing Debian Manual (harden-doc);
- `faq`: the Debian FAQ (debian-faq, -de, -fr);
- `maint-guide`: the Debian New Maintainers' Guide (maint-guide, -de, -fr);
- `paketbuch`: a German book on Debian's package management with no translation (all of it
  German: nothing to keep apart);

all sixteen by default (DEFAULT_SOURCES: the best lexicon induction on both pairs); also there:
`man` (manpages-<lang>, groff read by `man_paragraphs`; the English pages are not the ones the
others translate).

Translations leave some pages or paragraphs untranslated (about a quarter of the German GIMP
manual's text, a third of the French Handbook's, is English): a paragraph whose function words
are another language's (`language_of`) is dropped and counted in extra.json.

Being translations, the pages are parallel: like the Bible's chapters, each source's pages are
split in two disjoint halves by a hash of their language-free name, the source language takes
one half and English the other, and no paragraph and its translation both reach training. The
text feeds the skip-gram embeddings only (`embed` reads `extra.<l>.tok` when it is there); the
NMT models still train on the Bible's monolingual sides.

Where a source's pages come from, first found wins: `--source-dir NAME=DIR` (`--help-dir DIR` is
`libreoffice=DIR`), the installed package's folder, or `apt-get download` of the package into
`<work>/cache/<name>/` unpacked with `dpkg-deb -x` (no root needed, Debian's archive only).
"""
from __future__ import annotations

import gzip
import html.parser
import re
import shutil
import subprocess
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from common import check_pair, data_dir, outputs_done, tokenize, write_json, write_lines

BLOCKS = ("p", "h1", "h2", "h3", "h4", "h5", "h6", "td", "th", "li", "dt", "dd")
DIV_BLOCKS = ("para",)                  # <div class="para">: Publican's paragraphs (the Handbook)
SKIP = ("script", "style", "pre", "screen", "synopsis")   # code, not language (HTML, Mallard)
# DocBook (KDE's handbooks): its paragraphs, titles and table cells; code, the credits and the
# licence left out. Entities the file does not define (&kmail;, &kde;) become their names.
DOCBOOK_BLOCKS = ("para", "simpara", "title", "subtitle", "entry", "term", "caption")
DOCBOOK_SKIP = SKIP + ("programlisting", "literallayout", "legalnotice", "authorgroup", "author",
                       "othercredit", "date", "releaseinfo", "copyright", "keywordset", "revhistory")
MIN_WORDS = 3


@dataclass(frozen=True)
class Source:
    title: str
    package: str                        # Debian package(s), space-separated, {code} -> the language's code
    base: str                           # the manual's folder inside the package, from /
    sub: str                            # a language's pages under base ({code} filled in)
    codes: dict                         # language -> code in package and folder names
    pattern: str = "**/*.html"          # pages under the folder ({code} filled in; ".{code}" left
                                        # out for a language without a code: x.html, x.de.html)
    exclude: str = ""                   # regex: language-free page names not read (duplicates, code)
    numbered: bool = False              # only blocks whose id starts par_/hd_ (LibreOffice)
    system: bool = True                 # read the installed package's folder when it is there
    packages_by_lang: dict | None = None  # language -> package(s), where not package's pattern
    subs: dict | None = None            # language -> its pages' folder under base, where not sub's
    # A source in one language only (no translation exists, so nothing to keep apart): all its
    # pages go to that language; the others do not read it.
    only: str | None = None

    def debs(self, lang: str) -> list[str]:
        pkgs = (self.packages_by_lang or {}).get(lang, self.package)
        return pkgs.format(code=self.codes[lang].lower()).split()

    def read(self, page: Path) -> list[str]:
        if page.suffix == ".gz":
            with gzip.open(page, "rt", encoding="utf-8", errors="replace") as f:
                return man_paragraphs(f.read())
        text = page.read_text(encoding="utf-8", errors="replace")
        if page.suffix == ".lyx":
            return lyx_paragraphs(text)
        if page.suffix == ".docbook":
            return paragraphs(text, self.numbered, docbook=True)
        return paragraphs(text, self.numbered)

    def folder(self, base, lang: str) -> Path:
        return Path(base) / (self.subs or {}).get(lang, self.sub).format(code=self.codes[lang])

    def pages(self, root: Path, lang: str) -> dict[str, Path]:
        """{language-free page name: page} under the language's folder root (pattern: one glob
        or several separated by spaces)."""
        code = self.codes[lang]
        tag = f".{code}.html"
        pattern = self.pattern if code else self.pattern.replace(".{code}", "")
        out = {}
        for p in (q for pat in pattern.split() for q in root.glob(pat.format(code=code))):
            rel = p.relative_to(root).as_posix()
            if not code and _TAGGED.search(rel):
                continue                # another language's page beside the untagged ones
            name = rel[: -len(tag)] + ".html" if rel.endswith(tag) else rel
            if not (self.exclude and re.search(self.exclude, name)):
                out[name] = p
        return out


_TAGGED = re.compile(r"\.[a-z]{2}(_[A-Za-z]{2})?\.html$")


# Debian packages holding GNOME applications' help in English, German and French (bookworm).
GNOME_APPS = """accerciser aisleriot anjuta-common baobab bijiben brasero-common cheese-common deja-dup easytag
eog epiphany-browser-data evince-common evolution-common file-roller five-or-more four-in-a-row gbrainy
gedit-common glabels-data glade gnome-boxes gnome-calculator gnome-chess gnome-clocks gnome-devel-docs
gnome-dictionary gnome-klotski gnome-logs gnome-mahjongg gnome-mines gnome-music gnome-nettool gnome-nibbles
gnome-photos gnome-robots gnome-sudoku gnome-system-monitor gnome-system-tools gnome-taquin
gnome-terminal-data gnome-tetravex gnome-text-editor gnote gthumb-data gtranslator gucharmap hitori iagno
lightsoff ocrfeeder orca pitivi quadrapassel rhythmbox-data seahorse shotwell-common simple-scan sound-juicer
swell-foop tali totem-common vinagre zenity-common""".split()
# Debian packages holding KDE handbooks with at least 1,500 words in German or French, less the
# ones that are mostly data (kstars-data 77 MB, marble-data, kalzium-data, plasma-desktop-data,
# palapeli-data, kgeography-data): about 170 MB of downloads; German 0.4M words, French 0.2M.
KDE_APPS = """kate5-data kmail kmymoney-common krusader khelpcenter kalarm kid3 konqueror korganizer cervisia
skrooge-common kexi-data konversation-data kleopatra kio kphotoalbum kgamma5 okular kaddressbook kgoldrunner
kdesvn dolphin kturtle partitionmanager juk kajongg kmplot konsole kcachegrind kgpg kpat kig kompare kubrick
kinfocenter ksirk ksudoku kolourpaint kwordquiz killbots akregator kontact lokalize kde-spectacle kjumpingcube
cantor rocs kcalc kmenuedit step ktimetracker kwalletmanager kbackup ark kfloppy kmouth knotes skanlite
kspaceduel kiriki""".split()

SOURCES = {
    "libreoffice": Source("LibreOffice help", "libreoffice-help-{code}",
                          "usr/share/libreoffice/help", "{code}/text",
                          {"en": "en-US", "de": "de", "fr": "fr"}, numbered=True),
    "gimp": Source("GIMP user manual", "gimp-help-{code}", "usr/share/gimp/2.0/help", "{code}",
                   {"en": "en", "de": "de", "fr": "fr"}),
    "handbook": Source("The Debian Administrator's Handbook", "debian-handbook",
                       "usr/share/doc/debian-handbook/html", "{code}",
                       {"en": "en-US", "de": "de-DE", "fr": "fr-FR"}),
    "debref": Source("Debian Reference", "debian-reference-{code}", "usr/share/debian-reference", "",
                     {"en": "en", "de": "de", "fr": "fr"}, pattern="*.{code}.html"),
    "gnome": Source("GNOME help", "gnome-user-docs", "usr/share/help", "{code}/gnome-help",
                    {"en": "C", "de": "de", "fr": "fr"}, pattern="*.page"),
    "install": Source("Debian installation guide", "installation-guide-amd64",
                      "usr/share/doc/installation-guide-amd64", "{code}", {"en": "en", "de": "de", "fr": "fr"}),
    "devref": Source("Debian Developer's Reference", "developers-reference-{code}",
                     "usr/share/developers-reference", "{code}", {"en": "", "de": "de", "fr": "fr"},
                     pattern="*.html", packages_by_lang={"en": "developers-reference"}),
    # Texinfo manuals, English untagged (x.html) beside x.de.html, x.fr.html. Left out: the
    # one-page copies of the split manuals, and the untranslated, generated or code-only ones.
    "lilypond": Source("LilyPond manuals", "lilypond-doc-html-{code}", "usr/share/doc/lilypond/html/Documentation",
                       "", {"en": "", "de": "de", "fr": "fr"}, pattern="*/*.{code}.html",
                       exclude=r"big-page|^(internals|contributor|music-glossary|snippets|changes)/",
                       packages_by_lang={"en": "lilypond-doc-html"}),
    "kicad": Source("KiCad manuals", "kicad-doc-{code}", "usr/share/doc/kicad/help", "{code}",
                    {"en": "en", "de": "de", "fr": "fr"}, pattern="*.html"),
    # The help of GNOME's applications (Mallard pages; a few DocBook), GNOME's own help (the
    # `gnome` source) left out. English stays in many translations (the German Aisleriot help:
    # 6.7k words); language_of drops it. Not installed ones read: the machine's folder holds
    # whatever applications it has.
    "gnome-apps": Source("GNOME applications' help", " ".join(GNOME_APPS), "usr/share/help", "{code}",
                         {"en": "C", "de": "de", "fr": "fr"}, pattern="**/*.page **/*.docbook",
                         exclude=r"^(gnome-help|system-admin-guide)/", system=False),
    # KDE's handbooks (DocBook, usr/share/doc/HTML/<lang>/<app>/index.docbook and chapters).
    "kde": Source("KDE handbooks", " ".join(KDE_APPS), "usr/share/doc/HTML", "{code}",
                  {"en": "en", "de": "de", "fr": "fr"}, pattern="**/*.docbook", system=False),
    # LyX's manuals (.lyx files; English in doc/, translations in doc/<lang>/). The example
    # documents are left out: their names differ between languages.
    "lyx": Source("LyX manuals", "lyx-common", "usr/share/lyx/doc", "{code}", {"en": "", "de": "de", "fr": "fr"},
                  pattern="*.lyx", exclude=r"^(Dummy|DocumentBidon|Formula-numbering|Formelnummerierung|LFUNs|"
                                           r"LaTeXConfig|Development)"),
    "harden": Source("Securing Debian Manual", "harden-doc", "usr/share/doc/harden-doc/html", "{code}",
                     {"en": "en-US", "de": "de-DE", "fr": "fr-FR"}, pattern="*.html"),
    "faq": Source("The Debian FAQ", "debian-faq-{code}", "usr/share/doc/debian/FAQ", "{code}",
                  {"en": "en", "de": "de", "fr": "fr"}, pattern="*.{code}.html", subs={"en": ""},
                  packages_by_lang={"en": "debian-faq"}),
    "maint-guide": Source("Debian New Maintainers' Guide", "maint-guide-{code}", "usr/share/doc", "maint-guide-{code}/html",
                          {"en": "en", "de": "de", "fr": "fr"}, pattern="*.{code}.html",
                          subs={"en": "maint-guide/html"}, packages_by_lang={"en": "maint-guide"}),
    # A German book with no translation: all of it goes to German.
    "paketbuch": Source("Debian-Paketmanagement (book)", "debian-paketmanagement-buch",
                        "usr/share/doc/debian-paketmanagement-buch", "", {"de": "de"},
                        pattern="debian-paketmanagement.allinone.html", only="de"),
    # English pages are the Linux man-pages project's; the others, translations of many
    # programs' pages. The installed /usr/share/man holds whatever the machine has: not read.
    "man": Source("manual pages", "manpages-{code}", "usr/share/man", "{code}",
                  {"en": "", "de": "de", "fr": "fr"}, pattern="man[0-9]*/*.gz", system=False,
                  packages_by_lang={"en": "manpages manpages-dev"}),
}
# Measured (README), identical start, CSLS P@1 src->en / en->src, paragraphs in another language
# dropped: the first four 27.4 / 26.5 on fr-en and 22.1 / 23.0 on de-en (LibreOffice alone: 22.8 /
# 23.1 and 19.7 / 20.9); the first seven 29.5 / 29.2 and 24.9 / 25.8; all nine 29.9 / 29.1 and
# 25.5 / 26.4; all sixteen (session 11: German 1.40M tokens, French 1.23M, English 1.44M)
# 33.6 / 33.0 and 34.7 / 34.4. Word-by-word BLEU src->en: four 4.82 (fr) and 2.36 (de), nine
# 4.16 and 2.45, sixteen 4.63 and 2.25.
# man did worse on fr-en (before the filter). Without the filter de-en fell to 11.5.
DEFAULT_SOURCES = ("libreoffice", "gimp", "handbook", "debref", "gnome", "install", "devref", "lilypond", "kicad",
                   "gnome-apps", "kde", "lyx", "harden", "faq", "maint-guide", "paketbuch")


class _Paragraphs(html.parser.HTMLParser):
    """Texts of a page's blocks (paragraphs, headings, cells, list items), code, scripts and
    styles left out; `numbered`: only blocks with ids par_*/hd_* (LibreOffice's help text).
    A block inside another ends the outer one's text so far; the outer one's text after it is
    a block of its own."""

    def __init__(self, numbered: bool = False, docbook: bool = False):
        super().__init__(convert_charrefs=True)
        self.numbered = numbered
        self.blocks = DOCBOOK_BLOCKS if docbook else BLOCKS
        self.skip = DOCBOOK_SKIP if docbook else SKIP
        self.out: list[str] = []
        self._buf: list[str] = []
        self._open = False
        self._stack: list[bool | None] = []     # enclosing blocks' states (None: a plain div)
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in self.skip:
            self._skip += 1
            return
        a = dict(attrs)
        if tag in self.blocks or (tag == "div" and a.get("class") in DIV_BLOCKS):
            self._flush()
            self._stack.append(self._open)
            self._open = not self.numbered or (a.get("id") or "").startswith(("par_", "hd_"))
        elif tag == "div":
            self._stack.append(None)

    def handle_endtag(self, tag):
        if tag in self.skip:
            self._skip = max(0, self._skip - 1)
        elif tag in self.blocks or tag == "div":
            outer = self._stack.pop() if self._stack else False
            if outer is not None:
                self._flush()
                self._open = outer

    def handle_data(self, data):
        if self._open and not self._skip:
            self._buf.append(data)

    def _flush(self):
        text = " ".join(_ENTITY.sub(r"\1", "".join(self._buf)).split())
        if self._open and len(text.split()) >= MIN_WORDS:
            self.out.append(text)
        self._buf = []

    def close(self):
        super().close()
        self._flush()


_ENTITY = re.compile(r"&([A-Za-z][\w.-]*);")     # one the page does not define: its name


def paragraphs(page: str, numbered: bool = True, docbook: bool = False) -> list[str]:
    p = _Paragraphs(numbered, docbook)
    p.feed(page)
    p.close()
    return p.out


_LYX_SKIP = {"ERT", "Formula", "Graphics", "CommandInset", "listings", "Flex", "Note", "Branch", "Preview",
             "External", "Info", "Caption"}
_LYX_INLINE = {"Quotes": '"', "space": " ", "Newline": " ", "Separator": " "}
_LYX_CHARS = {"LyX": "LyX", "TeX": "TeX", "LaTeX": "LaTeX", "LaTeX2e": "LaTeX2e", "\\ldots": "...",
              "\\menuseparator": " > ", "\\slash{}": "/", "\\textcompwordmark{}": "", "\\-": "",
              "\\nobreakdash-": "-", "\\@.": "."}
_LYX_SPECIAL = re.compile(r"\\SpecialChar\s+(\S+)")


def lyx_paragraphs(source: str) -> list[str]:
    """The text of a LyX file's layouts (paragraphs, headings, list items), each its own block:
    text lines are joined as LyX writes them (a continuation line starts with its space), a
    layout inside an inset (a footnote) is a block of its own, and the insets that hold code,
    maths, notes, graphics or references are left out; quotes, spaces and LyX's special
    characters become their characters."""
    out: list[str] = []
    stack: list = []                  # open layouts (lists of text) and insets (their kinds)
    for line in source.splitlines():
        if line.startswith("\\begin_layout"):
            stack.append([])
        elif line.startswith("\\end_layout"):
            if stack and isinstance(stack[-1], list):
                text = " ".join("".join(stack.pop()).split())
                if len(text.split()) >= MIN_WORDS:
                    out.append(text)
        elif line.startswith("\\begin_inset"):
            kind = (line.split() + ["", ""])[1]
            if kind in _LYX_INLINE and stack and isinstance(stack[-1], list):
                stack[-1].append(_LYX_INLINE[kind])
            stack.append(kind)
        elif line.startswith("\\end_inset"):
            if stack and isinstance(stack[-1], str):
                stack.pop()
        elif not stack or not isinstance(stack[-1], list) or any(k in _LYX_SKIP for k in stack if isinstance(k, str)):
            continue
        elif line.startswith("\\SpecialChar") or not line.startswith(("\\", "#")):
            stack[-1].append(_LYX_SPECIAL.sub(lambda m: _LYX_CHARS.get(m.group(1), ""), line))
    return out


_MAN_CHARS = {"aq": "'", "lq": '"', "rq": '"', "dq": '"', "oq": "'", "cq": "'", "em": "-",
              "en": "-", "hy": "-", "mi": "-", "bu": " ", "co": "(c)", "rg": "(R)", "tm": "(TM)"}
_MAN_ESCAPE = re.compile(r"\\(?:f(?:\[[^\]]*\]|\(..|.)|s[-+]?\d+|\*(?:\[[^\]]*\]|\(..|.)"
                         r"|\((..)|\[([^\]]*)\]|(.))")
_MAN_SKIP_SECTIONS = {"synopsis", "übersicht", "see also", "voir aussi", "siehe auch", "colophon",
                      "kolophon", "traduction", "übersetzung", "copyright", "author", "authors",
                      "auteur", "auteurs", "autor", "autoren"}
_MAN_FONT = {"B", "I", "BR", "IR", "RB", "RI", "BI", "IB", "SM", "SB"}
_MAN_VERBATIM = {"nf": "fi", "EX": "EE", "TS": "TE", "EQ": "EN", "de": ".", "ig": "."}


def _man_escape(m: re.Match) -> str:
    two, named, one = m.group(1), m.group(2), m.group(3)
    if two is not None:
        return _MAN_CHARS.get(two, "")
    if named is not None:
        if named.startswith("u") and len(named) in (5, 6):
            try:
                return chr(int(named[1:], 16))
            except ValueError:
                return ""
        return _MAN_CHARS.get(named, "")
    if one is not None:
        return {"-": "-", "e": "\\", " ": " ", "~": " ", "0": " ", "|": "", "^": "", "&": "",
                "c": "", "%": ""}.get(one, "")
    return ""                          # fonts, sizes, strings


def man_paragraphs(source: str) -> list[str]:
    """The running text of a man page's groff source: macro lines end paragraphs (font macros
    keep their words), escapes become their characters or nothing; the synopsis, the
    see-also, author and translator sections, comments and verbatim blocks (.nf/.fi, .EX/.EE,
    tables) are left out."""
    out, buf = [], []
    skip_section, verbatim = False, None

    def flush():
        text = " ".join(" ".join(buf).split())
        if len(text.split()) >= MIN_WORDS:
            out.append(text)
        buf.clear()

    for line in source.splitlines():
        line = line.split('\\"', 1)[0]               # comments
        if line.strip() in ("", ".", "'"):
            if not line.strip():
                flush()
            continue
        if line.startswith((".", "'")):
            parts = line[1:].strip().split(None, 1)
            macro, arg = (parts + ["", ""])[:2] if parts else ("", "")
            if verbatim:
                if macro == verbatim:
                    verbatim = None
                continue
            if macro in _MAN_VERBATIM:
                flush()
                verbatim = _MAN_VERBATIM[macro]
                continue
            if macro in ("SH", "SS"):
                flush()
                title = _MAN_ESCAPE.sub(_man_escape, arg).strip('"').strip().lower()
                if macro == "SH":
                    skip_section = title in _MAN_SKIP_SECTIONS
                continue
            if macro in _MAN_FONT and not skip_section:
                buf.append(_MAN_ESCAPE.sub(_man_escape, arg.replace('"', "")))
                continue
            flush()
            continue
        if verbatim or skip_section:
            continue
        buf.append(_MAN_ESCAPE.sub(_man_escape, line))
    flush()
    return out


# Frequent function words of each language, none shared: a translated manual keeps some pages
# untranslated (about a quarter of the German GIMP manual's text is English), and that text is
# not the language's. A paragraph is dropped when another language's words outnumber its own.
STOPWORDS = {
    "en": set("the and of to is you that this with for are it be can your from which will not or".split()),
    "de": set("der die das und ist nicht mit sie ein eine den dem zu auf für werden wird oder sich auch von es".split()),
    "fr": set("le la les et est des une un du pour pas dans vous que qui sur avec sont ce au".split()),
}


def language_of(tokens: list[str]) -> str | None:
    """The language whose function words are most frequent in tokens (lowercased), None when
    there are none or a tie."""
    counts = {l: sum(t in words for t in tokens) for l, words in STOPWORDS.items()}
    best = max(counts.values())
    top = [l for l, n in counts.items() if n == best]
    return top[0] if best > 0 and len(top) == 1 else None


def side(name: str, lang: str, src: str) -> bool:
    """Whether the page called name (the same in every language) belongs to lang's half:
    the source language takes odd crc32 values, English the even ones (disjoint halves)."""
    odd = zlib.crc32(name.encode()) % 2 == 1
    return odd if lang == src else not odd


def fetch(name: str, lang: str, cache: Path) -> Path:
    """Unpack the source's package(s) for lang from Debian's archive into cache/<name>/ (each
    once: a marker file records it); -> the pages' folder."""
    s = SOURCES[name]
    target = cache / name
    root = s.folder(target / s.base, lang)
    pkgs = s.debs(lang)
    for pkg in tqdm(pkgs, desc=f"{name} packages {lang}", unit="package", disable=len(pkgs) < 4):
        marker = target / f".unpacked-{pkg}"
        if marker.is_file() or (len(pkgs) == 1 and root.is_dir() and any(s.pages(root, lang))):
            continue
        if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
            raise SystemExit(f"no {s.title} for {lang}: install {pkg} (apt-get install {pkg}), pass "
                             f"--source-dir {name}=DIR, or leave it out of --sources")
        target.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            r = subprocess.run(["apt-get", "download", pkg], cwd=tmp, capture_output=True, text=True)
            debs = list(Path(tmp).glob("*.deb"))
            if r.returncode != 0 or not debs:
                raise SystemExit(f"apt-get download {pkg} failed ({r.stderr.strip()[-300:]}); run "
                                 f"apt-get update, install the package, pass --source-dir {name}=DIR, "
                                 "or leave it out of --sources")
            unpacked = Path(tmp) / "x"
            subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(unpacked)], check=True)
            for item in unpacked.rglob("*"):
                dest = target / item.relative_to(unpacked)
                if item.is_dir():
                    dest.mkdir(parents=True, exist_ok=True)
                elif not dest.exists() and not item.is_symlink():
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.move(str(item), dest)
        marker.write_text(debs[0].name + "\n")
    if not root.is_dir():
        raise SystemExit(f"{' '.join(s.debs(lang))} hold no /{s.base}/{s.sub.format(code=s.codes[lang])} folder")
    return root


def pages_root(name: str, lang: str, source_dir: str | None, cache: Path) -> Path:
    """The folder holding the source's pages for lang (see the module's docstring): under
    source_dir, it is where the package has it under its base folder (for LibreOffice,
    DIR/<code>/text; for the GIMP manual, DIR/<code>)."""
    s = SOURCES[name]
    for base in [source_dir] if source_dir else ["/" + s.base] * s.system:
        root = s.folder(base, lang)
        if root.is_dir() and any(s.pages(root, lang)):
            return root
        if source_dir:
            flag = "--help-dir" if name == "libreoffice" else f"--source-dir {name}="
            raise SystemExit(f"{flag}{source_dir}: no {s.title} pages for {lang} in {root}")
    return fetch(name, lang, cache)


def extra_text(pair: str, work: Path, help_dir: str | None = None, force: bool = False,
               sources=DEFAULT_SOURCES, source_dirs: dict | None = None) -> dict:
    src, tgt = check_pair(pair)
    d = data_dir(work)
    sources = list(dict.fromkeys(sources))
    unknown = [n for n in sources if n not in SOURCES]
    if unknown or not sources:
        raise SystemExit(f"--sources: unknown {unknown or 'empty'}; choose from {', '.join(SOURCES)}")
    dirs = dict(source_dirs or {})
    if help_dir:
        dirs.setdefault("libreoffice", help_dir)
    outputs = [d / f"extra.{l}.tok" for l in (src, tgt)] + [d / "extra.json"]
    if outputs_done(outputs, force) and _same_sources(d / "extra.json", sources):
        print(f"extra-text: {d} already has it (use --force to redo)")
        return {}
    if not (d / "meta.json").is_file():
        raise SystemExit(f"{d} has no prepared data: run `unmt.py prepare --pair {pair}` first")
    meta = {"sources": {n: SOURCES[n].title + f" (Debian {SOURCES[n].package.format(code='<lang>')})"
                        for n in sources},
            "split": {src: "pages of odd crc32(name)", tgt: "pages of even crc32(name)"},
            "counts": {}, "by_source": {}}
    for lang in (src, tgt):
        seen, lines = set(), []
        for name in sources:
            s = SOURCES[name]
            if s.only not in (None, lang):
                continue
            root = pages_root(name, lang, dirs.get(name), work / "cache")
            pages = sorted((k, p) for k, p in s.pages(root, lang).items() if s.only or side(k, lang, src))
            n_before, n_pages, foreign = len(lines), 0, 0
            for _, page in tqdm(pages, desc=f"{name} pages {lang}", unit="page"):
                n_pages += 1
                for t in s.read(page):
                    if t not in seen:
                        seen.add(t)
                        tok = tokenize(t, lang)
                        if language_of(tok.lower().split()) not in (lang, None):
                            foreign += 1
                            continue
                        lines.append(tok)
            meta["by_source"].setdefault(name, {})[lang] = {
                "pages": n_pages, "paragraphs": len(lines) - n_before,
                "tokens": sum(len(x.split()) for x in lines[n_before:]),
                "dropped_other_language": foreign}
        if not lines:
            raise SystemExit(f"no text found in {', '.join(sources)} for {lang}")
        write_lines(d / f"extra.{lang}.tok", lines)
        meta["counts"][lang] = {"pages": sum(v[lang]["pages"] for v in meta["by_source"].values() if lang in v),
                                "paragraphs": len(lines), "tokens": sum(len(x.split()) for x in lines)}
    write_json(d / "extra.json", meta)
    print("extra-text: " + ", ".join(f"{l} {c['paragraphs']} paragraphs ({c['tokens']} tokens)"
                                     for l, c in meta["counts"].items()))
    return meta


def _same_sources(path: Path, sources) -> bool:
    import json
    try:
        return list(json.loads(path.read_text()).get("sources", {})) == list(sources)
    except (OSError, ValueError):
        return False
