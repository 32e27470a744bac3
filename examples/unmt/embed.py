"""`embed`: monolingual skip-gram embeddings, the self-learning cross-lingual mapping, and
bilingual lexicon induction (BLI) against a Debian dictionary when one is installed.

Outputs (<work>/emb): w2v.<l>.pt (monolingual), mapped.<l>.pt (shared space; contract format),
mapping.json (dictionary sizes, objective per iteration, times), bli.json.
"""
from __future__ import annotations

import gzip
import hashlib
import re
import time
from pathlib import Path

import torch
from tqdm import tqdm

import mapping
from common import (check_pair, data_dir, device, emb_dir, load_mapped, outputs_done,
                    read_lines, save_torch, write_json)

DING = Path("/usr/share/trans/de-en")
FREEDICT = Path("/usr/share/dictd")
NUMERAL = r"\d+([.,]\d+)?"


# --------------------------------------------------------------------------- embeddings
def train_skipgram(corpus: Path | list[Path], dim: int = 300, min_count: int = 3, window: int = 5,
                   epochs: int = 10, seed: int = 0, workers: int = 1) -> tuple[list[str], torch.Tensor]:
    """gensim skip-gram (DATA.md: fastText's subwords hurt the mapping on this corpus) on the
    lines of one file or of several, concatenated. With one worker the vectors are the same from
    run to run (gensim's threads interleave their updates in the order the OS schedules them)."""
    corpora = [corpus] if isinstance(corpus, Path) else list(corpus)
    from gensim.models import Word2Vec
    from gensim.models.callbacks import CallbackAny2Vec

    class Bar(CallbackAny2Vec):
        def __init__(self):
            self.bar = tqdm(total=epochs, desc=f"skip-gram {'+'.join(c.name for c in corpora)}",
                            unit="epoch")

        def on_epoch_end(self, model):
            self.bar.update(1)

    sentences = [line.split() for c in corpora for line in read_lines(c)]
    bar = Bar()
    model = Word2Vec(sentences, vector_size=dim, sg=1, min_count=min_count, window=window,
                     negative=10, sample=1e-4, epochs=epochs, workers=workers, seed=seed,
                     callbacks=[bar])
    bar.bar.close()
    words = list(model.wv.index_to_key)  # gensim keeps them by descending count
    return words, torch.from_numpy(model.wv.vectors.copy()).float()


# --------------------------------------------------------------------------- dictionaries
_DING_DROP = re.compile(r"\{[^}]*\}|\[[^\]]*\]|\([^)]*\)|<[^>]*>")
_WORD = re.compile(r"[^\W\d_][\w'-]*")


def _single_words(field: str, strip_to: bool = False) -> list[str]:
    out = []
    for w in field.split(";"):
        w = " ".join(_DING_DROP.sub(" ", w).split()).lower()
        if strip_to and w.startswith("to "):
            w = w[3:]
        if _WORD.fullmatch(w):
            out.append(w)
    return out


def read_ding(path: Path) -> set[tuple[str, str]]:
    """Ding (trans-de-en) lines `de | variants :: en | variants` -> single-word (de, en)."""
    pairs = set()
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("#") or " :: " not in line:
                continue
            de, en = line.rstrip("\n").split(" :: ", 1)
            for dv, ev in zip(de.split(" | "), en.split(" | ")):
                for d in _single_words(dv):
                    for e in _single_words(ev, strip_to=True):
                        pairs.add((d, e))
    return pairs


_B64 = {c: i for i, c in enumerate(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}


def _b64(s: str) -> int:
    n = 0
    for c in s:
        n = n * 64 + _B64[c]
    return n


def read_dictd(index: Path) -> set[tuple[str, str]]:
    """A dictd dictionary (FreeDict: .index with base64 offsets + .dict.dz) -> single-word
    (headword, translation) pairs. The entry's first line is the headword, the others hold
    comma-separated translations, sometimes numbered `1. ...`."""
    with gzip.open(index.with_suffix(".dict.dz"), "rb") as f:
        data = f.read()
    pairs = set()
    for line in index.read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        if len(parts) != 3 or parts[0].startswith("00database"):
            continue
        off, size = _b64(parts[1]), _b64(parts[2])
        lines = data[off:off + size].decode("utf-8", "replace").strip().split("\n")
        head = _single_words(_DING_DROP.sub(" ", lines[0].split(" /")[0]))
        for body in lines[1:]:
            body = re.sub(r"^\s*\d+\.\s*", "", body)
            for t in _single_words(body.replace(",", ";"), strip_to=True):
                for h in head:
                    pairs.add((h, t))
    return pairs


def load_dictionary(src: str, path: str | None = None) -> tuple[set[tuple[str, str]], str]:
    """(src word, English word) pairs and a description; raises FileNotFoundError when none."""
    if path is not None:
        p = Path(path)
        if p.suffix == ".index":
            return read_dictd(p), str(p)
        pairs = set()
        for line in read_lines(p):
            a, _, b = line.partition("\t") if "\t" in line else line.partition(" ")
            if a and b:
                pairs.add((a.strip().lower(), b.strip().lower()))
        return pairs, str(p)
    if src == "de" and DING.is_file():
        return read_ding(DING), str(DING)
    if src == "fr":
        fe, ef = FREEDICT / "freedict-fra-eng.index", FREEDICT / "freedict-eng-fra.index"
        if fe.is_file() or ef.is_file():
            pairs = read_dictd(fe) if fe.is_file() else set()
            if ef.is_file():
                pairs |= {(f, e) for e, f in read_dictd(ef)}
            return pairs, f"{fe} + {ef}"
    hint = {"de": "apt-get install trans-de-en",
            "fr": "apt-get install dict-freedict-fra-eng dict-freedict-eng-fra"}[src]
    raise FileNotFoundError(f"no {src}-en dictionary installed for BLI ({hint}, or --dict "
                            "FILE with `word<TAB>translation` lines)")


def bli(xw: torch.Tensor, zw: torch.Tensor, src_words: list[str], trg_words: list[str],
        pairs: set[tuple[str, str]], n_words: int = 1500, csls_k: int = 10) -> dict:
    """P@1 and P@5 by nearest neighbour and by CSLS over the whole target vocabulary, on the
    n_words most frequent source words that the dictionary covers (a word counts as covered
    when one of its translations is in the target vocabulary)."""
    trg_pos = {w: j for j, w in enumerate(trg_words)}
    gold: dict[int, set[int]] = {}
    src_pos = {w: i for i, w in enumerate(src_words)}
    for s, t in pairs:
        if s in src_pos and t in trg_pos:
            gold.setdefault(src_pos[s], set()).add(trg_pos[t])
    queries = sorted(gold)[:n_words]
    if not queries:
        return {"words": 0}
    q = torch.tensor(queries, device=xw.device)
    out = {"words": len(queries), "max_rank": queries[-1] + 1}
    for name, k in (("nn", 0), ("csls", csls_k)):
        top = retrieve_words(xw, zw, q, k).cpu()
        hits = [[j in gold[i] for j in row.tolist()] for i, row in zip(queries, top)]
        out[f"{name}_p@1"] = 100.0 * sum(h[0] for h in hits) / len(hits)
        out[f"{name}_p@5"] = 100.0 * sum(any(h[:5]) for h in hits) / len(hits)
    return out


def retrieve_words(xw, zw, q, csls_k, topn=5):
    return mapping.retrieve(xw[q], zw, topn=topn, csls_k=csls_k, x_all=xw)


# --------------------------------------------------------------------------- the step
def _cached_corpora(path: Path) -> list[str]:
    """The text files a cached w2v.<l>.pt was trained on (older files: the mono text alone)."""
    obj = torch.load(path, map_location="cpu", weights_only=False)
    lang = path.name.split(".")[1]
    return obj.get("corpora", [f"mono.{lang}.tok"])


def _fingerprints(files) -> dict[str, str]:
    """{file name: sha1 of its bytes}: cached embeddings are reused only for the same text."""
    out = {}
    for p in files:
        h = hashlib.sha1()
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        out[Path(p).name] = h.hexdigest()
    return out


def _cache_matches(path: Path, fingerprints: dict[str, str]) -> bool:
    obj = torch.load(path, map_location="cpu", weights_only=False)
    return obj.get("fingerprints") == fingerprints


def embed(pair: str, work: Path, args) -> None:
    src, tgt = check_pair(pair)
    d, e = data_dir(work), emb_dir(work)
    dev = device()
    times = {}
    corpora = {}
    for lang in (src, tgt):
        out = e / f"w2v.{lang}.pt"
        corpus = d / f"mono.{lang}.tok"
        if not corpus.is_file():
            raise SystemExit(f"{corpus} is missing: run `unmt.py prepare --pair {pair}` first")
        # `extra-text` wrote out-of-domain text for the embeddings only
        files = [corpus] + [p for p in [d / f"extra.{lang}.tok"] if p.is_file()]
        corpora[lang] = [p.name for p in files]
        prints = _fingerprints(files)
        if outputs_done([out], args.force) and _cache_matches(out, prints):
            continue
        t, cpu = time.perf_counter(), time.process_time()
        words, vectors = train_skipgram(files, args.dim, args.min_count, args.window,
                                        args.epochs, args.seed, args.workers)
        save_torch(out, {"words": words, "vectors": vectors, "corpora": corpora[lang],
                         "fingerprints": prints})
        for stale in [e / f"mapped.{l}.pt" for l in (src, tgt)] + [e / "mapping.json", e / "bli.json"]:
            stale.unlink(missing_ok=True)     # built from other embeddings
        times[f"skipgram_{lang}_s"] = time.perf_counter() - t
        times[f"skipgram_{lang}_cpu_s"] = time.process_time() - cpu
        print(f"embed: {lang}: {len(words)} words, {times[f'skipgram_{lang}_s']:.0f} s")

    mapped = [e / f"mapped.{l}.pt" for l in (src, tgt)]
    if not outputs_done(mapped + [e / "mapping.json"], args.force):
        (sw, x), (tw, z) = (load_mapped(e / f"w2v.{l}.pt") for l in (src, tgt))
        t, cpu = time.perf_counter(), time.process_time()
        x, z = mapping.normalize(x.to(dev)), mapping.normalize(z.to(dev))
        if args.init == "unsupervised":
            init = mapping.init_unsupervised(x, z, args.init_vocab, args.csls_k)
        else:
            cut = args.cutoff
            init = mapping.init_identical(sw[:cut], tw[:cut],
                                          NUMERAL if args.init == "numerals" else None, dev)
        init_s = time.perf_counter() - t
        xw, zw, (si, ti), history = mapping.self_learning(
            x, z, *init, cutoff=args.cutoff, early_cutoff=args.early_cutoff,
            csls_k=args.csls_k, patience=args.patience, threshold=args.threshold,
            max_iter=args.max_iter, seed=args.seed)
        map_s, map_cpu = time.perf_counter() - t, time.process_time() - cpu
        save_torch(mapped[0], {"words": sw, "vectors": xw.cpu()})
        save_torch(mapped[1], {"words": tw, "vectors": zw.cpu()})
        write_json(e / "mapping.json", {
            "init": args.init, "init_pairs": len(init[0]), "init_s": init_s, "mapping_s": map_s,
            "mapping_cpu_s": map_cpu, "corpora": corpora,
            "device": str(dev), "cutoff": args.cutoff, "early_cutoff": args.early_cutoff,
            "iterations": len(history), "final_dictionary": len(si), "history": history,
            **times})
        print(f"embed: mapping ({args.init} start, {len(init[0])} initial pairs) "
              f"{len(history)} iterations, {map_s:.0f} s ({map_cpu:.0f} s CPU)")

    bli_out = e / "bli.json"
    if outputs_done([bli_out], args.force):
        return
    try:
        pairs, source = load_dictionary(src, args.dict)
    except FileNotFoundError as err:
        print(f"embed: BLI skipped: {err}")
        return
    (sw, xw), (tw, zw) = (load_mapped(p) for p in mapped)
    xw, zw = xw.to(dev), zw.to(dev)
    res = {"dictionary": source, "dictionary_pairs": len(pairs),
           f"{src}->{tgt}": bli(xw, zw, sw, tw, pairs, args.bli_words, args.csls_k),
           f"{tgt}->{src}": bli(zw, xw, tw, sw, {(b, a) for a, b in pairs}, args.bli_words,
                                args.csls_k)}
    write_json(bli_out, res)
    for direction in (f"{src}->{tgt}", f"{tgt}->{src}"):
        r = res[direction]
        print(f"BLI {direction} ({r['words']} words): " + ", ".join(
            f"{k} {r[k]:.1f}" for k in ("nn_p@1", "nn_p@5", "csls_p@1", "csls_p@5") if k in r))
