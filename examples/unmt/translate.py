"""Loading a trained model, translating text, and scoring it (`translate` and `evaluate`)."""
from __future__ import annotations

import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from model import UNMT, ModelConfig
from nmt_utils import NUM_SPECIAL, UNK, SharedSpace, Vocab, bucket_by_length, detokenize, pad_batch, read_lines, tokenize, write_json


def model_path(model_dir: str, direction: Optional[Tuple[str, str]] = None) -> str:
    """<model_dir>/model.<src>-<tgt>.pt when training kept one for that direction (--select
    direction), else <model_dir>/model.pt."""
    if direction is not None:
        path = os.path.join(model_dir, f"model.{direction[0]}-{direction[1]}.pt")
        if os.path.exists(path):
            return path
    path = os.path.join(model_dir, "model.pt")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: train a model first (`unmt.py train --model {model_dir}`)")
    return path


def build_from_saved(obj, impl: Optional[str] = None, device="cpu", backend: Optional[str] = None):
    vocabs = [Vocab.from_state(s) for s in obj["vocabs"]]
    cfg = ModelConfig(**obj["model_config"])
    impl = impl or obj["impl"]
    enc_vocab = NUM_SPECIAL + sum(len(v.words) for v in vocabs)
    model = UNMT(cfg, [v.lang for v in vocabs], enc_vocab, {v.lang: len(v) for v in vocabs}, obj["embed_dim"], impl,
                 backend=backend)
    return model.to(device), {v.lang: v for v in vocabs}


def load_model(model_dir: str, impl: Optional[str] = None, device="cpu", backend: Optional[str] = None,
               direction: Optional[Tuple[str, str]] = None):
    """-> (UNMT in eval mode, {lang: Vocab}, the saved metadata); with direction=(src, tgt), the
    model kept for that direction if training selected one (see model_path)."""
    obj = torch.load(model_path(model_dir, direction), map_location=device, weights_only=False)
    model, vocabs = build_from_saved(obj, impl, device, backend)
    model.load_state_dict(obj["state_dict"])
    model.eval()
    return model, vocabs, obj


UNK_MODES = ("translate", "copy")


def unk_translations(model: UNMT, vocabs, src: str, tgt: str, words: Sequence[str], csls_k: int = 10) -> Dict[str, str]:
    """What an <unk> output becomes when it attends most to each of `words` (source units).

    A word the target vocabulary also has (a name, a number) is copied; any other word the encoder
    has a vector for becomes its nearest target word in the shared space by CSLS (the word-by-word
    baseline's rule, over every target word the encoder reads); a word without a vector is copied.
    The hubness penalties are computed once per model and direction, and translations are cached."""
    vs, vt = vocabs[src], vocabs[tgt]
    # the cache holds while the encoder's table is fixed (it is, unless --train-embeddings)
    cache = model.__dict__.setdefault("_unk_cache", {}) if model.cfg.freeze_embeddings else {}
    table = cache.setdefault((src, tgt), {})
    todo = sorted({w for w in words if w not in table})
    query = [w for w in todo if w in vs.index and w not in vt.index] if vs.sp is None and vt.sp is None else []
    table.update((w, w) for w in todo)
    if query:
        if "space" not in cache:
            cache["space"] = SharedSpace(model.encoder.embed.full_weight(), vocabs, csls_k)
        best = cache["space"].nearest(src, tgt, torch.tensor([vs.index[w] for w in query]))
        table.update((w, vt.words[j - NUM_SPECIAL]) for w, j in zip(query, best.tolist()))
    return table


def translate_tokens(model: UNMT, vocabs, src: str, tgt: str, sents: Sequence[Sequence[str]], beam: int = 1,
                     batch_tokens: int = 2000, max_len: int = 200, attention_out: Optional[list] = None,
                     unk: str = "translate") -> List[List[str]]:
    """Tokenized source sentences -> tokenized translations, in input order. Empty inputs give
    empty outputs without touching the model. Words outside the encoder's vocabulary become <unk>
    on the way in; an <unk> on the way out becomes the source word it attends to most, translated
    by `unk_translations` (unk="translate") or as it is (unk="copy")."""
    if unk not in UNK_MODES:
        raise ValueError(f"unk must be one of {UNK_MODES}, got {unk!r}")
    vs, vt = vocabs[src], vocabs[tgt]
    units = [vs.units(s)[:max_len] for s in sents]
    ids = [vs.encode(s)[:max_len] if s else [] for s in sents]
    out: List[List[str]] = [[] for _ in sents]
    if attention_out is not None:
        attention_out.extend([None] * len(sents))
    device = next(model.parameters()).device
    todo = [i for i, x in enumerate(ids) if x]
    was_training = model.training
    model.eval()
    try:
        for chunk in bucket_by_length([len(ids[i]) for i in todo], batch_tokens):
            rows = [todo[j] for j in chunk]
            x, lengths = pad_batch([ids[i] for i in rows])
            x = vs.to_joint(x).to(device)
            res = model.translate(x, lengths.to(device), tgt, beam=beam)
            table = None
            if unk == "translate":
                hit = (res.tokens == UNK).cpu()
                words = [units[i][int(res.attention[r, t, :len(units[i])].argmax())]
                         for r, i in enumerate(rows) for t in hit[r].nonzero().flatten().tolist()
                         if t < int(res.lengths[r])]
                table = unk_translations(model, vocabs, src, tgt, words) if words else None
            for r, i in enumerate(rows):
                n = int(res.lengths[r])
                att = res.attention[r, :n].float().cpu()
                out[i] = vt.decode(res.tokens[r, :n].tolist(), units[i], att, table)
                if attention_out is not None:
                    attention_out[i] = (units[i], vt.units(out[i]) if vt.sp is None else
                                        [vt.words[t - NUM_SPECIAL] if t >= NUM_SPECIAL else "<unk>"
                                         for t in res.tokens[r, :n].tolist()], att)
    finally:
        model.train(was_training)
    return out


def translate_raw(model, vocabs, src, tgt, lines: Sequence[str], beam: int = 1, **kw) -> List[str]:
    sents = [tokenize(line, src) if line.strip() else [] for line in lines]
    hyps = translate_tokens(model, vocabs, src, tgt, sents, beam=beam, **kw)
    return [detokenize(h, tgt) if h else "" for h in hyps]


def score(hyps: Sequence[str], refs: Sequence[str]) -> dict:
    """sacrebleu BLEU and chrF with their signatures."""
    import sacrebleu
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses for {len(refs)} references")
    bleu, chrf = sacrebleu.metrics.BLEU(), sacrebleu.metrics.CHRF()
    b, c = bleu.corpus_score(list(hyps), [list(refs)]), chrf.corpus_score(list(hyps), [list(refs)])
    return {"bleu": round(b.score, 2), "chrf": round(c.score, 2), "bleu_signature": str(bleu.get_signature()),
            "chrf_signature": str(chrf.get_signature())}


def evaluate_split(model, vocabs, work: str, src: str, tgt: str, split: str = "test", beam: int = 1,
                   limit: Optional[int] = None, unk: str = "translate") -> dict:
    """Translate <work>/data/<split>.<src>.tok and score against <split>.<tgt>.raw."""
    data = os.path.join(work, "data")
    srcs = [line.split() for line in read_lines(os.path.join(data, f"{split}.{src}.tok"))]
    refs = read_lines(os.path.join(data, f"{split}.{tgt}.raw"))
    if limit:
        srcs, refs = srcs[:limit], refs[:limit]
    hyps = [detokenize(h, tgt) if h else "" for h in translate_tokens(model, vocabs, src, tgt, srcs, beam=beam, unk=unk)]
    res = score(hyps, refs)
    res.update({"src": src, "tgt": tgt, "split": split, "sentences": len(refs), "beam": beam, "unk": unk})
    return res, hyps


# ----------------------------------------------------------------------------- commands

def cmd_translate(args) -> int:
    model, vocabs, _ = load_model(args.model, args.impl, args.device, args.backend, direction=(args.src, args.tgt))
    for lang in (args.src, args.tgt):
        if lang not in vocabs:
            raise SystemExit(f"--src/--tgt must be among the model's languages {sorted(vocabs)}, got {lang!r}")
    lines = [line.rstrip("\n") for line in sys.stdin]
    for hyp in translate_raw(model, vocabs, args.src, args.tgt, lines, beam=args.beam, unk=args.unk):
        sys.stdout.write(hyp + "\n")
    sys.stdout.flush()
    return 0


def cmd_evaluate(args) -> int:
    """Both directions of every model given (a de-en and a fr-en model: all four directions)."""
    from nmt_utils import atomic_write
    results = []
    for model_dir in args.model:
        obj = torch.load(model_path(model_dir), map_location="cpu", weights_only=False)
        work = args.work or obj["train_config"]["work"]
        langs = [v["lang"] for v in obj["vocabs"]]
        for src, tgt in ((langs[0], langs[1]), (langs[1], langs[0])):
            # each direction's own model when training kept one (--select direction)
            model, vocabs, _ = load_model(model_dir, args.impl, args.device, args.backend, direction=(src, tgt))
            res, hyps = evaluate_split(model, vocabs, work, src, tgt, args.split, args.beam, unk=args.unk)
            res["model"] = model_dir
            results.append(res)
            print(f"{src}->{tgt} {args.split}: BLEU {res['bleu']:.2f}  chrF {res['chrf']:.2f}  ({model_dir})")
            print(f"  {res['bleu_signature']}\n  {res['chrf_signature']}")
            with atomic_write(os.path.join(model_dir, f"{args.split}.{src}-{tgt}.hyp")) as f:
                f.writelines(h + "\n" for h in hyps)
        write_json([r for r in results if r["model"] == model_dir], os.path.join(model_dir, f"eval.{args.split}.json"))
    return 0


def _add_unk_arg(p):
    p.add_argument("--unk", choices=UNK_MODES, default="translate",
                   help="an <unk> output becomes the most attended source word's nearest target word in the "
                        "shared space (translate; names are copied) or that source word itself (copy)")


def add_args(sub):
    p = sub.add_parser("translate", help="translate raw sentences from stdin (one per line) to stdout")
    p.add_argument("--model", required=True, help="model directory written by `train`")
    p.add_argument("--src", required=True)
    p.add_argument("--tgt", required=True)
    p.add_argument("--beam", type=int, default=1, help="beam size (1 = greedy)")
    _add_unk_arg(p)
    p.add_argument("--impl", choices=("fastrnn", "torch"), default=None, help="default: as trained")
    p.add_argument("--device", default="cpu")
    p.add_argument("--backend", default=None, help="fastrnn backend (default: fastrnn picks)")
    p.set_defaults(func=cmd_translate)

    p = sub.add_parser("evaluate", help="sacrebleu BLEU and chrF on the test set, both directions of each model")
    p.add_argument("--model", required=True, nargs="+", help="model directories (de-en and fr-en: all four directions)")
    p.add_argument("--work", default=None, help="data directory (default: the one each model was trained on)")
    p.add_argument("--split", default="test", choices=("test", "dev"))
    p.add_argument("--beam", type=int, default=1)
    _add_unk_arg(p)
    p.add_argument("--impl", choices=("fastrnn", "torch"), default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--backend", default=None, help="fastrnn backend (default: fastrnn picks)")
    p.set_defaults(func=cmd_evaluate)
