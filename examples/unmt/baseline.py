"""`baseline`: word-by-word translation through the shared embedding space.

Each source word becomes its CSLS nearest neighbour among the most frequent target words;
words outside the source vocabulary and tokens without letters (punctuation, numbers) are
copied. Scored with sacrebleu (BLEU and chrF) against the primary reference and, when
prepare wrote them, against every translation of the target language together.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch
from tqdm import tqdm

import mapping
from common import (baseline_dir, data_dir, detokenize, device, emb_dir, load_mapped,
                    outputs_done, read_lines, tokenize, write_json, write_lines)

_LETTER = re.compile(r"[^\W\d_]")


def word_table(src_words: list[str], src_vecs: torch.Tensor, tgt_words: list[str],
               tgt_vecs: torch.Tensor, needed: list[str], vocab: int = 20000,
               csls_k: int = 10) -> dict[str, str]:
    """Translation of every word in `needed` that the source vocabulary knows."""
    pos = {w: i for i, w in enumerate(src_words)}
    known = [w for w in needed if w in pos and _LETTER.search(w)]
    if not known:
        return {}
    dev = device()
    x, z = src_vecs.to(dev), tgt_vecs[:vocab].to(dev)
    q = torch.tensor([pos[w] for w in known], device=dev)
    best = mapping.retrieve(x[q], z, topn=1, csls_k=csls_k, x_all=x[:max(vocab, len(q))])
    return {w: tgt_words[j] for w, j in zip(known, best[:, 0].tolist())}


def translate_line(cased_tokens: list[str], table: dict[str, str]) -> list[str]:
    out = []
    for i, tok in enumerate(cased_tokens):
        low = tok.lower()
        word = table.get(low)
        if word is None:
            word = tok  # unknown or no letters: copy as written
        elif word == low and tok != low:
            word = tok  # same spelling on both sides (mostly names): keep the source's case
        if i == 0 and word:
            word = word[0].upper() + word[1:]
        out.append(word)
    return out


def score(hyps: list[str], refs: list[list[str]]) -> dict:
    import sacrebleu
    bleu = sacrebleu.metrics.BLEU()
    chrf = sacrebleu.metrics.CHRF()
    b, c = bleu.corpus_score(hyps, refs), chrf.corpus_score(hyps, refs)
    return {"bleu": round(b.score, 2), "chrf": round(c.score, 2), "bleu_signature":
            str(bleu.get_signature()), "chrf_signature": str(chrf.get_signature()),
            "bleu_detail": str(b)}


def baseline(work: Path, src: str, tgt: str, split: str = "test", vocab: int = 20000,
             force: bool = False, csls_k: int = 10) -> dict:
    out_dir = baseline_dir(work)
    hyp_path, json_path = out_dir / f"{src}-{tgt}.hyp", out_dir / f"{src}-{tgt}.json"
    if split != "test":
        hyp_path, json_path = (p.with_name(f"{split}.{p.name}") for p in (hyp_path, json_path))
    if outputs_done([hyp_path, json_path], force):
        print(f"baseline: {hyp_path} exists (use --force to redo)")
        return {}
    d, e = data_dir(work), emb_dir(work)
    for p in (e / f"mapped.{src}.pt", e / f"mapped.{tgt}.pt", d / f"{split}.{src}.raw"):
        if not p.is_file():
            raise SystemExit(f"{p} is missing: run prepare and embed first")
    src_raw = read_lines(d / f"{split}.{src}.raw")
    cased = [tokenize(s, src, lower=False).split()
             for s in tqdm(src_raw, desc=f"tokenize {split}.{src}", leave=False)]
    (sw, sv), (tw, tv) = load_mapped(e / f"mapped.{src}.pt"), load_mapped(e / f"mapped.{tgt}.pt")
    needed = sorted({t.lower() for line in cased for t in line})
    table = word_table(sw, sv, tw, tv, needed, vocab, csls_k)
    hyps = [detokenize(translate_line(line, table), tgt) for line in cased]
    copies = [detokenize(line, tgt) for line in cased]
    write_lines(hyp_path, hyps)

    primary = read_lines(d / f"{split}.{tgt}.raw")
    refs_all = [read_lines(p) for p in sorted((d / "refs").glob(f"{split}.{tgt}.*.raw"))]
    res = {"src": src, "tgt": tgt, "split": split, "lines": len(hyps),
           "types_translated": len(table), "types": len(needed),
           "primary": score(hyps, [primary]), "copy_source": score(copies, [primary])}
    if len(refs_all) > 1:
        res["all_refs"] = {"references": len(refs_all), **score(hyps, refs_all)}
    write_json(json_path, res)
    p = res["primary"]
    print(f"baseline {src}->{tgt} ({split}, {len(hyps)} lines): BLEU {p['bleu']} chrF "
          f"{p['chrf']} (copying the source: BLEU {res['copy_source']['bleu']})")
    print(f"  {p['bleu_signature']}\n  {p['chrf_signature']}")
    if "all_refs" in res:
        a = res["all_refs"]
        print(f"  against all {a['references']} {tgt} references: BLEU {a['bleu']} "
              f"chrF {a['chrf']}")
    return res
