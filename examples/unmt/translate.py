"""Loading a trained model, translating text, and scoring it (`translate` and `evaluate`)."""
from __future__ import annotations

import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple, Union

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
DEFAULT_ALPHA = 0.6     # GNMT's length penalty for beam search, until one is tuned on dev
DECODE_FILE = "decode.json"


def tuned_alpha(model_dir: str, src: str, tgt: str) -> Optional[float]:
    """The length penalty `evaluate --tune-alpha` (or `reproduce`) chose on dev for this model and
    direction, or None. Training removes the file: a model trained further is tuned again."""
    path = os.path.join(model_dir, DECODE_FILE)
    if not os.path.exists(path):
        return None
    import json
    with open(path) as f:
        return json.load(f).get(f"{src}-{tgt}", {}).get("alpha")


def save_tuned_alpha(model_dir: str, src: str, tgt: str, alpha: float, beam: int, dev_bleu: Dict[str, float]) -> None:
    import json
    path = os.path.join(model_dir, DECODE_FILE)
    blob = {}
    if os.path.exists(path):
        with open(path) as f:
            blob = json.load(f)
    blob[f"{src}-{tgt}"] = {"alpha": alpha, "beam": beam, "dev_bleu_by_alpha": dev_bleu}
    write_json(blob, path)


def dev_bleu_by_alpha(model: UNMT, vocabs, work: str, src: str, tgt: str, beam: int, alphas: Sequence[float],
                      limit: Optional[int] = None, unk: str = "translate") -> Dict[str, float]:
    """BLEU on the dev split for each length penalty, from one beam search (the search does not
    depend on alpha, only the choice among its finished hypotheses)."""
    srcs, refs = split_data(work, src, tgt, "dev", limit)
    outs = translate_tokens(model, vocabs, src, tgt, srcs, beam=beam, unk=unk, alpha=[float(a) for a in alphas])
    return {f"{a:g}": score([detokenize(h, tgt) if h else "" for h in hyps], refs)["bleu"]
            for a, hyps in zip(alphas, outs)}


def tune_alpha(model: UNMT, vocabs, work: str, src: str, tgt: str, beam: int, alphas: Sequence[float],
               limit: Optional[int] = None, unk: str = "translate") -> Tuple[float, Dict[str, float]]:
    """The beam search's length penalty with the best BLEU on the dev split (the first of equals),
    and each alpha's dev BLEU. A model that writes too short for BLEU's brevity penalty (session
    16: fr->en output 0.89 of the reference length with alpha 0.6) gets longer with a larger alpha."""
    if beam < 2:
        raise ValueError(f"tuning the length penalty needs beam search (beam >= 2), got beam {beam}")
    alphas = [float(a) for a in alphas]
    if not alphas:
        raise ValueError("alphas must not be empty")
    table = dev_bleu_by_alpha(model, vocabs, work, src, tgt, beam, alphas, limit, unk)
    best = max(alphas, key=lambda a: (table[f"{a:g}"], -alphas.index(a)))
    return best, table


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
                     unk: str = "translate", alpha: Union[float, Sequence[float]] = DEFAULT_ALPHA) -> list:
    """Tokenized source sentences -> tokenized translations, in input order (beam search with the
    GNMT length penalty `alpha`; a sequence of alphas gives a list of translations per alpha,
    from one search). Empty inputs give
    empty outputs without touching the model. Words outside the encoder's vocabulary become <unk>
    on the way in; an <unk> on the way out becomes the source word it attends to most, translated
    by `unk_translations` (unk="translate") or as it is (unk="copy")."""
    if unk not in UNK_MODES:
        raise ValueError(f"unk must be one of {UNK_MODES}, got {unk!r}")
    many = isinstance(alpha, (list, tuple))
    if many and attention_out is not None:
        raise ValueError("attention_out takes the translations of one alpha, got a sequence")
    vs, vt = vocabs[src], vocabs[tgt]
    units = [vs.units(s)[:max_len] for s in sents]
    ids = [vs.encode(s)[:max_len] if s else [] for s in sents]
    outs: List[List[List[str]]] = [[[] for _ in sents] for _ in (alpha if many else [alpha])]
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
            found = model.translate(x, lengths.to(device), tgt, beam=beam, alpha=alpha)
            for out, res in zip(outs, found if many else (found,)):
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
    return outs if many else outs[0]


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


def split_data(work: str, src: str, tgt: str, split: str, limit: Optional[int] = None):
    """-> (tokenized <split>.<src> sentences, raw <split>.<tgt> references), the first `limit`."""
    data = os.path.join(work, "data")
    srcs = [line.split() for line in read_lines(os.path.join(data, f"{split}.{src}.tok"))]
    refs = read_lines(os.path.join(data, f"{split}.{tgt}.raw"))
    return (srcs[:limit], refs[:limit]) if limit else (srcs, refs)


def evaluate_split(model, vocabs, work: str, src: str, tgt: str, split: str = "test", beam: int = 1,
                   limit: Optional[int] = None, unk: str = "translate", alpha: float = DEFAULT_ALPHA) -> dict:
    """Translate <work>/data/<split>.<src>.tok and score against <split>.<tgt>.raw."""
    srcs, refs = split_data(work, src, tgt, split, limit)
    hyps = [detokenize(h, tgt) if h else "" for h in translate_tokens(model, vocabs, src, tgt, srcs, beam=beam, unk=unk,
                                                                          alpha=alpha)]
    res = score(hyps, refs)
    res.update({"src": src, "tgt": tgt, "split": split, "sentences": len(refs), "beam": beam, "unk": unk})
    if beam > 1:
        res["alpha"] = alpha
    return res, hyps


# ----------------------------------------------------------------------------- commands

def pick_alpha(args, model_dir: str, src: str, tgt: str) -> float:
    """--alpha, else the one tuned on dev for this model and direction, else DEFAULT_ALPHA."""
    if args.alpha is not None:
        return args.alpha
    tuned = tuned_alpha(model_dir, src, tgt)
    return DEFAULT_ALPHA if tuned is None else tuned


def cmd_translate(args) -> int:
    model, vocabs, _ = load_model(args.model, args.impl, args.device, args.backend, direction=(args.src, args.tgt))
    for lang in (args.src, args.tgt):
        if lang not in vocabs:
            raise SystemExit(f"--src/--tgt must be among the model's languages {sorted(vocabs)}, got {lang!r}")
    lines = [line.rstrip("\n") for line in sys.stdin]
    alpha = pick_alpha(args, args.model, args.src, args.tgt)
    for hyp in translate_raw(model, vocabs, args.src, args.tgt, lines, beam=args.beam, unk=args.unk, alpha=alpha):
        sys.stdout.write(hyp + "\n")
    sys.stdout.flush()
    return 0


def cmd_evaluate(args) -> int:
    """Both directions of every model given (a de-en and a fr-en model: all four directions)."""
    from nmt_utils import atomic_write
    if args.tune_alpha and args.beam < 2:
        raise SystemExit(f"--tune-alpha tunes beam search: give --beam >= 2 (got {args.beam})")
    if args.tune_alpha and args.alpha is not None:
        raise SystemExit("--alpha and --tune-alpha: give one")
    results = []
    for model_dir in args.model:
        obj = torch.load(model_path(model_dir), map_location="cpu", weights_only=False)
        work = args.work or obj["train_config"]["work"]
        langs = [v["lang"] for v in obj["vocabs"]]
        for src, tgt in ((langs[0], langs[1]), (langs[1], langs[0])):
            # each direction's own model when training kept one (--select direction)
            model, vocabs, _ = load_model(model_dir, args.impl, args.device, args.backend, direction=(src, tgt))
            if args.tune_alpha:
                alpha, table = tune_alpha(model, vocabs, work, src, tgt, args.beam, args.tune_alpha, unk=args.unk)
                save_tuned_alpha(model_dir, src, tgt, alpha, args.beam, table)
                print(f"{src}->{tgt} dev BLEU by length penalty: "
                      + "  ".join(f"{a} {b:.2f}" for a, b in table.items()) + f"; alpha {alpha:g}")
            else:
                alpha = pick_alpha(args, model_dir, src, tgt)
            res, hyps = evaluate_split(model, vocabs, work, src, tgt, args.split, args.beam, unk=args.unk, alpha=alpha)
            res["model"] = model_dir
            results.append(res)
            print(f"{src}->{tgt} {args.split}: BLEU {res['bleu']:.2f}  chrF {res['chrf']:.2f}  ({model_dir})")
            print(f"  {res['bleu_signature']}\n  {res['chrf_signature']}")
            with atomic_write(os.path.join(model_dir, f"{args.split}.{src}-{tgt}.hyp")) as f:
                f.writelines(h + "\n" for h in hyps)
        write_json([r for r in results if r["model"] == model_dir], os.path.join(model_dir, f"eval.{args.split}.json"))
    return 0


def _alphas(text: str) -> List[float]:
    import argparse
    try:
        out = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}")
    if not out or any(not (a >= 0 and a != float("inf")) for a in out):
        raise argparse.ArgumentTypeError(f"expected comma-separated finite numbers >= 0, got {text!r}")
    return out


def _alpha(text: str) -> float:
    import argparse
    out = _alphas(text)
    if len(out) != 1:
        raise argparse.ArgumentTypeError(f"expected one number >= 0, got {text!r}")
    return out[0]


def _add_alpha_arg(p):
    p.add_argument("--alpha", type=_alpha, default=None,
                   help="beam search's GNMT length penalty ((5 + n) / 6) ** alpha; default: the one tuned on "
                        f"dev for this model and direction (decode.json), else {DEFAULT_ALPHA}")


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
    _add_alpha_arg(p)
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
    _add_alpha_arg(p)
    p.add_argument("--tune-alpha", type=_alphas, default=None, metavar="A,B,...",
                   help="choose the length penalty among these on the dev split (with --beam >= 2), for each "
                        "direction, save it in the model's decode.json (translate uses it) and score with it")
    _add_unk_arg(p)
    p.add_argument("--impl", choices=("fastrnn", "torch"), default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--backend", default=None, help="fastrnn backend (default: fastrnn picks)")
    p.set_defaults(func=cmd_evaluate)
