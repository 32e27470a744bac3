"""`train`: unsupervised NMT training (Artetxe et al. 2017) and its variants.

Every step runs, one optimizer update per mini-batch, in this order:
  denoise(src), denoise(tgt)               input corrupted by len//2 random contiguous swaps
  backtrans(src), backtrans(tgt)           the current model in inference mode translates a batch
                                           greedily; the model learns to recover the original
  parallel(src->tgt), parallel(tgt->src)   semi-supervised (--parallel N) or alone (--supervised N)

Weight averaging (--ema DECAY, off by default; the short presets use it): an exponential moving
average of the weights, updated after every step, is what dev BLEU scores and model.pt keeps;
with --ema-bt it also back-translates. A few hundred steps of Adam at lr 1e-3 on mini-batches of
32 leave dev BLEU swinging by a point from one evaluation to the next; the average does not.

Model selection: model.pt is the evaluation with the best mean dev BLEU of the two directions.
With --select direction each direction also keeps its own best evaluation, model.<src>-<tgt>.pt,
which `translate`, `evaluate` and `reproduce` then use for that direction: one run's two
directions often peak at different steps (fr->en early, en->fr later).

Resumability: a checkpoint holds the model (and its average), the optimizer, every rank's RNG
states and each data stream's (epoch, position); nothing else draws random numbers, so `--resume`
after a kill continues exactly as the uninterrupted run (same losses).

Data parallelism: under torchrun every rank takes its slice of each global batch, gradients are
averaged with all_reduce (gloo on CPU, NCCL on GPUs) before clipping, so the replicas stay
identical; rank 0 alone writes files.
"""
from __future__ import annotations

import contextlib
import os
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional

import torch

from model import IMPLS, UNMT, ModelConfig
from nmt_utils import (NUM_SPECIAL, UNK, default_work, SharedSpace, Stream, add_noise, atomic_torch_save, build_vocabs, pad_batch, read_lines,
                       rng_state, set_rng_state, write_json)

SELECT = ("mean", "direction")      # --select: model selection on dev BLEU (TrainConfig.select)

class SimulatedKill(Exception):
    """Raised by fit(crash_after=N) to test --resume: the run stops as if killed, no final save."""


@dataclass
class TrainConfig:
    pair: str = "de-en"
    work: str = ""
    model_dir: str = ""
    impl: str = "fastrnn"
    backend: Optional[str] = None   # fastrnn backend (cuda|triton|cpu|reference); None: fastrnn picks
    device: str = "auto"
    steps: int = 1000
    max_time: float = 0.0           # seconds; 0 = no limit (stops at a step boundary, after a checkpoint)
    batch_size: int = 50            # sentences per mini-batch per rank (the paper: 50)
    lr: float = 2e-4                # the paper: Adam, 0.0002
    clip: float = 5.0
    max_len: int = 50               # longest training sentence in units
    max_vocab: int = 50000          # words each decoder writes
    max_src_vocab: int = 0          # words the encoder reads: 0 = max_vocab, -1 = every mapped word
    seed: int = 1
    backtranslation: bool = True
    bpe: bool = False
    parallel: int = 0               # parallel pairs for the third objective (-1 = all)
    supervised: bool = False        # only the parallel objective
    eval_every: int = 500
    save_every: int = 100
    log_every: int = 1              # history rows are means over this many steps
    dev_sents: int = 300            # dev sentences translated for the periodic BLEU (0: all)
    bt_max_len_a: float = 1.2
    bt_max_len_b: int = 5
    # Back-translate with the word-by-word model (each word's CSLS nearest neighbour in the shared
    # space, part 1's baseline) for the first N steps, as Lample et al. 2018 start; 0: the model
    # back-translates from the first step, as in Artetxe et al. 2017.
    bt_init_steps: int = 0
    # Scale the fixed cross-lingual tables so that a coordinate's RMS is this (0: as mapped, rows
    # of norm ~0.8, coordinates ~0.05). A uniform scale keeps the shared space's geometry; at
    # 1.0 the inputs have the magnitude of a fresh nn.Embedding and tied logits can be sharp.
    embed_rms: float = 0.0
    # Exponential moving average of the weights (Polyak averaging; 0: off): dev BLEU, model
    # selection and model.pt use the average, back-translation the current weights (with ema_bt
    # the average). The decay is min(ema, (1 + step) / (10 + step)) (TensorFlow's
    # ExponentialMovingAverage with num_updates): until that ramp reaches `ema` (step 890 for
    # 0.99) the average spans about the last step / 9 steps, so neither the random initial
    # weights nor the first steps linger in it; a run of a few hundred steps never gets past the
    # ramp, whatever the decay.
    ema: float = 0.0
    ema_bt: bool = False            # back-translate with the averaged weights (a mean teacher)
    # "mean": one model.pt, the best mean dev BLEU of both directions; "direction": also
    # model.<src>-<tgt>.pt, each direction's best dev BLEU (translate/evaluate prefer it)
    select: str = "mean"
    model: dict = field(default_factory=dict)

    @property
    def langs(self):
        src, tgt = self.pair.split("-")
        return src, tgt

    def objectives(self):
        src, tgt = self.langs
        tasks = []
        if not self.supervised:
            tasks += [("denoise", src, src), ("denoise", tgt, tgt)]
            if self.backtranslation:
                tasks += [("backtrans", src, tgt), ("backtrans", tgt, src)]
        if self.supervised or self.parallel:
            tasks += [("parallel", src, tgt), ("parallel", tgt, src)]
        return tasks


def variant_name(cfg: TrainConfig) -> str:
    n = "all" if cfg.parallel < 0 else (f"{cfg.parallel // 1000}k" if cfg.parallel % 1000 == 0 else str(cfg.parallel))
    if cfg.supervised:
        return f"supervised-{n}"
    name = "backtrans" if cfg.backtranslation else "denoise"
    if cfg.bpe:
        name += "-bpe"
    if cfg.backtranslation and cfg.bt_init_steps:
        name += f"-wbw{cfg.bt_init_steps}"
    if cfg.parallel:
        name += f"-para{n}"
    if cfg.model.get("attention", "general") != "general":
        name += f"-att-{cfg.model['attention']}"
    if cfg.ema:
        name += f"-ema{cfg.ema:g}" + ("-bt" if cfg.ema_bt else "")
    return name


# ----------------------------------------------------------------------------- distributed

class Dist:
    def __init__(self, device_kind: str):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.dist = None
        if self.world > 1:                     # importing torch.distributed costs seconds: only when used
            import torch.distributed as dist
            self.dist = dist
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if device_kind == "auto":
            device_kind = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(f"cuda:{self.local_rank}" if device_kind == "cuda" else "cpu")
        if device_kind == "cuda":
            torch.cuda.set_device(self.device)
        if self.world > 1:
            if not self.dist.is_initialized():
                self.dist.init_process_group("nccl" if device_kind == "cuda" else "gloo")
            if device_kind == "cpu":
                # ranks share the cores: one rank per core rather than every rank on all of them
                local_world = int(os.environ.get("LOCAL_WORLD_SIZE", self.world))
                torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))

    @property
    def main(self):
        return self.rank == 0

    def broadcast_params(self, model):
        if self.world > 1:
            for t in list(model.parameters()) + list(model.buffers()):
                self.dist.broadcast(t.data, 0)

    def average_grads(self, params):
        if self.world == 1:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])       # one collective, not one per tensor
        self.dist.all_reduce(flat)
        flat /= self.world
        i = 0
        for p, g in zip(params, grads):
            n = g.numel()
            p.grad = flat[i:i + n].view_as(p)
            i += n

    def gather(self, obj):
        if self.world == 1:
            return [obj]
        out = [None] * self.world
        self.dist.all_gather_object(out, obj)
        return out

    def sum(self, x: float) -> float:
        if self.world == 1:
            return x
        t = torch.tensor([x], dtype=torch.float64, device=self.device)   # NCCL takes CUDA tensors only
        self.dist.all_reduce(t)
        return float(t)

    def close(self):
        if self.world > 1 and self.dist.is_initialized():
            self.dist.barrier()
            self.dist.destroy_process_group()


# ----------------------------------------------------------------------------- data

def load_corpora(cfg: TrainConfig, vocabs):
    """Encoded training text: mono[lang] and para (src ids, tgt ids), lengths 1..max_len."""
    src, tgt = cfg.langs
    data = os.path.join(cfg.work, "data")
    ok = lambda s: 0 < len(s) <= cfg.max_len
    mono = {}
    if not cfg.supervised:
        for lang in (src, tgt):
            path = os.path.join(data, f"mono.{lang}.tok")
            if not os.path.exists(path):
                raise FileNotFoundError(f"{path} not found: run `unmt.py prepare --pair {cfg.pair}` first")
            enc = (vocabs[lang].encode(line.split()) for line in read_lines(path))
            mono[lang] = [s for s in enc if ok(s)]
    para = []
    if cfg.parallel or cfg.supervised:
        paths = [os.path.join(data, f"para.{cfg.pair}.{lang}.tok") for lang in (src, tgt)]
        for p in paths:
            if not os.path.exists(p):
                raise FileNotFoundError(f"{p} not found: run `unmt.py prepare --pair {cfg.pair}` first")
        a, b = read_lines(paths[0]), read_lines(paths[1])
        if len(a) != len(b):
            raise ValueError(f"{paths[0]} and {paths[1]} are not aligned ({len(a)} vs {len(b)} lines)")
        order = torch.randperm(len(a), generator=torch.Generator().manual_seed(cfg.seed)).tolist()
        n = len(a) if cfg.parallel < 0 else min(cfg.parallel, len(a))
        for i in order[:n]:
            x, y = vocabs[src].encode(a[i].split()), vocabs[tgt].encode(b[i].split())
            if ok(x) and ok(y):
                para.append((x, y))
    return mono, para


# ----------------------------------------------------------------------------- the trainer

class Trainer:
    def __init__(self, cfg: TrainConfig, log=print):
        self.cfg, self.log = cfg, log
        if cfg.impl not in IMPLS:
            raise ValueError(f"--impl must be one of {IMPLS}, got {cfg.impl!r}")
        if cfg.bt_init_steps < 0:
            raise ValueError(f"--bt-init-steps must be >= 0, got {cfg.bt_init_steps}")
        if cfg.select not in SELECT:
            raise ValueError(f"--select must be one of {SELECT}, got {cfg.select!r}")
        if cfg.dev_sents < 0:
            raise ValueError(f"--dev-sents must be >= 0 (0: the whole dev set), got {cfg.dev_sents}")
        self.dist = Dist(cfg.device)
        self.device = self.dist.device
        src, tgt = cfg.langs
        vocab_list, joint, lang_embs = build_vocabs(cfg.work, src, tgt, cfg.max_vocab, cfg.bpe, cfg.max_src_vocab)
        if cfg.embed_rms > 0:
            scale = cfg.embed_rms / float(joint.pow(2).mean().sqrt())
            joint, lang_embs = joint * scale, [e * scale for e in lang_embs]
        self.vocabs = {v.lang: v for v in vocab_list}
        self.mcfg = ModelConfig(**cfg.model).validate()
        torch.manual_seed(cfg.seed)           # identical initial weights on every rank
        self.model = UNMT(self.mcfg, [src, tgt], joint.shape[0], {v.lang: len(v) for v in vocab_list},
                          joint.shape[1], cfg.impl, joint, dict(zip((src, tgt), lang_embs)),
                          backend=cfg.backend).to(self.device)
        self.dist.broadcast_params(self.model)
        self.embed_dim = joint.shape[1]
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.Adam(self.params, lr=cfg.lr)
        if not 0.0 <= cfg.ema < 1.0:
            raise ValueError(f"--ema must be in [0, 1), got {cfg.ema}")
        if cfg.ema_bt and not cfg.ema:
            raise ValueError("--ema-bt needs --ema")
        self.ema = [p.detach().clone() for p in self.params] if cfg.ema else None
        self.mono, self.para = load_corpora(cfg, self.vocabs)
        r, w = self.dist.rank, self.dist.world
        self.streams: Dict[str, Stream] = {}
        for kind, a, b in cfg.objectives():
            name = f"{kind}.{a}-{b}"
            n = len(self.para) if kind == "parallel" else len(self.mono[a])
            self.streams[name] = Stream(name, n, cfg.batch_size, cfg.seed, r, w)
        # dropout and noise draw from per-rank streams (different data per rank anyway)
        torch.manual_seed(cfg.seed * 7919 + r)
        random.seed(cfg.seed * 7919 + r)
        self.noise = random.Random(cfg.seed * 104729 + r)
        self.step = 0
        self.history: List[dict] = []
        self.dev_history: List[dict] = []
        self.best_bleu = -1.0
        self.best_by_direction: Dict[str, float] = {}   # --select direction: "a-b" -> best dev BLEU
        self.train_time = 0.0
        self.tokens = 0
        self.window: Dict[str, float] = {}      # loss sums since the last history row
        self.word_by_word: Optional[dict] = None   # (a, b) -> local id table, for --bt-init-steps

    # -- objectives

    def _batch(self, kind, a, b):
        """-> (src joint ids, src lengths, tgt lang, tgt local ids, tgt lengths)."""
        idx = self.streams[f"{kind}.{a}-{b}"].next()
        va, vb = self.vocabs[a], self.vocabs[b]
        if kind == "parallel":
            xs, ys = [self.para[i][0 if a == self.cfg.langs[0] else 1] for i in idx], \
                     [self.para[i][1 if a == self.cfg.langs[0] else 0] for i in idx]
            x, xl = pad_batch(xs)
            y, yl = pad_batch(ys)
            return va.to_joint(x), xl, b, vb.as_target(y), yl
        sents = [self.mono[a][i] for i in idx]
        y, yl = pad_batch(sents)
        if kind == "denoise":
            x, xl = pad_batch([add_noise(s, self.noise) for s in sents])
            return va.to_joint(x), xl, a, va.as_target(y), yl
        # back-translation: a -> b with the current model in inference mode, then b -> a
        if self.step < self.cfg.bt_init_steps:
            if self.word_by_word is None:
                self.word_by_word = self._word_by_word_tables()
            table = self.word_by_word[(a, b)]
            if self.cfg.bpe:   # pieces -> words, each word's CSLS translation, -> the other side's pieces
                synth = [vb.encode([table.get(w, w) for w in va.decode(s)]) or [UNK] for s in sents]
            else:
                synth = [table[torch.tensor(s)].tolist() for s in sents]
            x, xl = pad_batch(synth)
            return vb.to_joint(x), xl, a, va.as_target(y), yl
        self.model.eval()
        with torch.no_grad(), (self.averaged() if self.cfg.ema_bt else contextlib.nullcontext()):
            res = self.model.translate(va.to_joint(y).to(self.device), yl.to(self.device), b,
                                       max_len_a=self.cfg.bt_max_len_a, max_len_b=self.cfg.bt_max_len_b)
        self.model.train()
        toks, lens = res.tokens.cpu(), res.lengths.cpu()
        synth = [toks[i, :int(lens[i])].tolist() or [3] for i in range(len(sents))]   # empty -> <unk>
        x, xl = pad_batch(synth)
        return vb.to_joint(x), xl, a, va.as_target(y), yl

    def _word_by_word_tables(self) -> dict:
        """(a, b) -> part 1's word-by-word translation of a into b: a table of local ids over the
        model's own words, or with --bpe a dict word -> word over the mapped words (the pieces are
        joined into words, translated, and cut into the other language's pieces)."""
        pairs = (self.cfg.langs, self.cfg.langs[::-1])
        if not self.cfg.bpe:
            space = SharedSpace(self.model.encoder.embed.full_weight(), self.vocabs)
            return {(s, t): space.word_by_word(s, t) for s, t in pairs}
        words, joint, _ = build_vocabs(self.cfg.work, *self.cfg.langs, self.cfg.max_vocab, False, -1)
        wv = {v.lang: v for v in words}
        space = SharedSpace(joint, wv)
        return {(s, t): {w: wv[t].words[int(j) - NUM_SPECIAL]
                         for w, j in zip(wv[s].words, space.word_by_word(s, t)[NUM_SPECIAL:])}
                for s, t in pairs}

    def train_step(self, kind, a, b) -> float:
        x, xl, lang, y, yl = self._batch(kind, a, b)
        self.opt.zero_grad(set_to_none=True)
        loss_sum, ntok = self.model.loss(x.to(self.device), xl.to(self.device), lang, y.to(self.device),
                                         yl.to(self.device))
        (loss_sum / max(ntok, 1)).backward()
        self.dist.average_grads(self.params)
        torch.nn.utils.clip_grad_norm_(self.params, self.cfg.clip)
        self.opt.step()
        self.tokens += int(xl.sum()) + ntok
        return float(loss_sum.detach()) / max(ntok, 1)

    def update_ema(self):
        """ema <- d * ema + (1 - d) * weights, once a step, d = min(--ema, (1 + step) / (10 + step))."""
        if self.ema is None:
            return
        d = min(self.cfg.ema, (1 + self.step) / (10 + self.step))
        with torch.no_grad():
            torch._foreach_lerp_(self.ema, [p.detach() for p in self.params], 1.0 - d)

    @contextlib.contextmanager
    def averaged(self):
        """The model holds the averaged weights inside the block (no-op without --ema)."""
        if self.ema is None:
            yield
            return
        with torch.no_grad():
            current = [p.detach().clone() for p in self.params]
            for p, e in zip(self.params, self.ema):
                p.copy_(e)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, c in zip(self.params, current):
                    p.copy_(c)

    # -- checkpoints

    def _model_blob(self):
        return {"state_dict": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                "model_config": asdict(self.mcfg), "train_config": asdict(self.cfg), "impl": self.cfg.impl,
                "vocabs": [v.state() for v in self.vocabs.values()], "embed_dim": self.embed_dim,
                "step": self.step}

    def checkpoint_path(self):
        return os.path.join(self.cfg.model_dir, "checkpoint.pt")

    def save_checkpoint(self):
        rngs = self.dist.gather({"rng": rng_state(), "noise": self.noise.getstate(),
                                 "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None})
        if not self.dist.main:
            return
        blob = self._model_blob()
        blob.update({"optim": self.opt.state_dict(), "streams": {n: s.state() for n, s in self.streams.items()},
                     "rngs": rngs, "history": self.history, "dev_history": self.dev_history,
                     "best_bleu": self.best_bleu, "best_by_direction": self.best_by_direction,
                     "train_time": self.train_time, "tokens": self.tokens,
                     "window": self.window, "ema": self.ema})
        atomic_torch_save(blob, self.checkpoint_path())
        self.write_log()

    def load_checkpoint(self) -> bool:
        path = self.checkpoint_path()
        if not os.path.exists(path):
            return False
        blob = torch.load(path, map_location="cpu", weights_only=False)   # RNG states must stay CPU tensors
        for key in ("model_config",):
            if blob[key] != asdict(self.mcfg):
                raise ValueError(f"{path} was written with another model configuration {blob[key]}; "
                                 f"use a fresh --model directory or the same flags")
        if blob["train_config"]["pair"] != self.cfg.pair or blob["impl"] != self.cfg.impl:
            raise ValueError(f"{path} is a {blob['impl']} model of {blob['train_config']['pair']}, "
                             f"not {self.cfg.impl} {self.cfg.pair}")
        self.model.load_state_dict(blob["state_dict"])
        self.opt.load_state_dict(blob["optim"])
        for n, s in blob["streams"].items():
            self.streams[n].load_state(s)
        if len(blob["rngs"]) != self.dist.world:
            self.log(f"warning: checkpoint from {len(blob['rngs'])} ranks resumed on {self.dist.world}: "
                     "the data order is kept, the random streams are not")
        mine = blob["rngs"][min(self.dist.rank, len(blob["rngs"]) - 1)]
        set_rng_state(mine["rng"])
        self.noise.setstate(mine["noise"])
        if mine.get("cuda") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(mine["cuda"].cpu(), self.device)
        self.step, self.history, self.dev_history = blob["step"], blob["history"], blob["dev_history"]
        self.best_bleu, self.train_time, self.tokens = blob["best_bleu"], blob["train_time"], blob["tokens"]
        self.best_by_direction = dict(blob.get("best_by_direction", {}))
        self.window = blob.get("window", {})
        if self.ema is not None:
            if blob.get("ema") is None:
                raise ValueError(f"{path} was written without --ema; resume it without --ema or use a fresh "
                                 f"--model directory")
            for e, saved in zip(self.ema, blob["ema"]):
                e.copy_(saved)
        return True

    def write_log(self):
        write_json({"config": asdict(self.cfg), "step": self.step, "history": self.history,
                    "dev": self.dev_history, "train_time_s": round(self.train_time, 2), "tokens": self.tokens,
                    "tokens_per_s": round(self.tokens / self.train_time, 1) if self.train_time else None,
                    "best_dev_bleu": self.best_bleu, "best_dev_bleu_by_direction": self.best_by_direction,
                    "world_size": self.dist.world, "device": str(self.device)},
                   os.path.join(self.cfg.model_dir, "train_log.json"))

    def evaluate_dev(self):
        from translate import evaluate_split
        if not self.dist.main:
            return None
        src, tgt = self.cfg.langs
        row = {"step": self.step}
        with self.averaged():
            for a, b in ((src, tgt), (tgt, src)):
                res, _ = evaluate_split(self.model, self.vocabs, self.cfg.work, a, b, "dev", limit=self.cfg.dev_sents)
                row[f"{a}-{b}"] = res["bleu"]
            self.dev_history.append(row)
            blob = None
            bleu = (row[f"{src}-{tgt}"] + row[f"{tgt}-{src}"]) / 2
            if bleu > self.best_bleu:
                self.best_bleu = bleu
                blob = self._model_blob()
                atomic_torch_save(blob, os.path.join(self.cfg.model_dir, "model.pt"))
            if self.cfg.select == "direction":
                for d in (f"{src}-{tgt}", f"{tgt}-{src}"):
                    if row[d] > self.best_by_direction.get(d, -1.0):
                        self.best_by_direction[d] = row[d]
                        blob = blob or self._model_blob()
                        atomic_torch_save(blob, os.path.join(self.cfg.model_dir, f"model.{d}.pt"))
        return row

    def replicas_identical(self) -> bool:
        with torch.no_grad():
            sig = float(sum(p.double().sum() * (i + 1) for i, p in enumerate(self.model.parameters())))
        sigs = self.dist.gather(sig)
        return all(s == sigs[0] for s in sigs)

    # -- the loop

    def fit(self, resume=False, crash_after: Optional[int] = None, progress=True):
        cfg = self.cfg
        if self.dist.main:
            os.makedirs(cfg.model_dir, exist_ok=True)
        resumed = resume and self.load_checkpoint()
        if resumed:
            self.log(f"resumed {self.checkpoint_path()} at step {self.step}")
        if self.dist.main and (not resumed or cfg.select != "direction"):
            # a direction's model left by an earlier run (or another --select) is not this run's choice
            for a, b in (cfg.langs, cfg.langs[::-1]):
                stale = os.path.join(cfg.model_dir, f"model.{a}-{b}.pt")
                if os.path.exists(stale):
                    os.remove(stale)
        from translate import DECODE_FILE
        tuned = os.path.join(cfg.model_dir, DECODE_FILE)       # the length penalty tuned for the old weights
        if self.dist.main and os.path.exists(tuned):
            os.remove(tuned)
        tasks = cfg.objectives()
        from tqdm import tqdm
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not (progress and self.dist.main),
                   desc=f"train {variant_name(cfg)} {cfg.pair}", dynamic_ncols=True)
        t_last = time.perf_counter()
        while self.step < cfg.steps:
            losses = {f"{k}.{a}-{b}": self.train_step(k, a, b) for k, a, b in tasks}
            self.update_ema()
            self.step += 1
            now = time.perf_counter()
            self.train_time += now - t_last
            out_of_time = cfg.max_time and self.dist.sum(self.train_time) / self.dist.world >= cfg.max_time
            done = self.step >= cfg.steps or out_of_time
            for k, v in losses.items():
                self.window[k] = self.window.get(k, 0.0) + v
            self.window["n"] = self.window.get("n", 0) + 1
            if self.step % cfg.log_every == 0 or done:
                n = self.window.pop("n")
                self.history.append({"step": self.step, **{k: round(v / n, 6) for k, v in self.window.items()}})
                self.window = {}
            bar.update(1)
            bar.set_postfix({k.split(".")[0][:5] + "." + k.split(".")[1]: f"{v:.2f}" for k, v in losses.items()})
            if crash_after is not None and self.step >= crash_after:
                raise SimulatedKill(f"simulated kill at step {self.step}")
            if cfg.eval_every and (self.step % cfg.eval_every == 0 or done):
                row = self.evaluate_dev()
                if row:
                    bar.write(f"step {self.step} dev BLEU " + "  ".join(f"{k} {v:.2f}" for k, v in row.items()
                                                                         if k != "step"))
            if self.step % cfg.save_every == 0 or done:
                if self.dist.world > 1 and self.history:
                    self.history[-1]["replicas_identical"] = self.replicas_identical()
                self.save_checkpoint()
            t_last = time.perf_counter()
            if out_of_time:
                break
        bar.close()
        # without dev evaluations there is no selection: model.pt is the last weights (averaged
        # with --ema)
        if self.dist.main and (not self.dev_history or not os.path.exists(os.path.join(cfg.model_dir, "model.pt"))):
            with self.averaged():
                atomic_torch_save(self._model_blob(), os.path.join(cfg.model_dir, "model.pt"))
        return self.history


# ----------------------------------------------------------------------------- command

def config_from_args(args) -> TrainConfig:
    pair = args.pair
    work = args.work or default_work(pair)
    parallel = -1 if str(args.parallel or args.supervised or "0") == "all" else int(args.parallel or args.supervised or 0)
    cfg = TrainConfig(pair=pair, work=work, impl=args.impl, backend=args.backend, device=args.device, steps=args.steps,
                      max_time=args.max_time, batch_size=args.batch_size, lr=args.lr, clip=args.clip,
                      max_len=args.max_len, max_vocab=args.max_vocab, max_src_vocab=args.max_src_vocab, seed=args.seed,
                      backtranslation=not args.no_backtranslation, bpe=args.bpe, parallel=parallel,
                      supervised=bool(args.supervised), eval_every=args.eval_every, save_every=args.save_every,
                      log_every=args.log_every, embed_rms=args.embed_rms, bt_init_steps=args.bt_init_steps,
                      dev_sents=args.dev_sents, ema=args.ema, ema_bt=args.ema_bt, select=args.select,
                      model={"cell": args.cell, "layers": args.layers, "hidden": args.hidden,
                             "attention": args.attention, "input_feeding": not args.no_input_feeding,
                             "dropout": args.dropout, "freeze_embeddings": not args.train_embeddings,
                             "tie_output": args.tie_output})
    cfg.model_dir = args.model or os.path.join(work, "nmt", variant_name(cfg) + ("" if args.impl == "fastrnn" else
                                                                               f"-{args.impl}"))
    return cfg


def cmd_train(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = config_from_args(args)
    trainer = Trainer(cfg)
    try:
        trainer.fit(resume=args.resume)
        if trainer.dist.main:
            tl = trainer.train_time
            print(f"trained {trainer.step} steps in {tl:.0f}s, {trainer.tokens / max(tl, 1e-9):.0f} tokens/s "
                  f"per rank x {trainer.dist.world}; model in {cfg.model_dir}")
        if args.save_replicas:
            sd = {k: v.detach().cpu() for k, v in trainer.model.state_dict().items()}
            torch.save(sd, os.path.join(cfg.model_dir, f"replica.{trainer.dist.rank}.pt"))
    finally:
        trainer.dist.close()
    return 0


def add_model_args(p):
    g = p.add_argument_group("model (defaults: Artetxe et al. 2017)")
    g.add_argument("--cell", choices=("gru", "lstm"), default="gru")
    g.add_argument("--layers", type=int, default=2)
    g.add_argument("--hidden", type=int, default=600, help="encoder output size (both directions) and "
                                                           "decoder hidden size")
    g.add_argument("--attention", choices=("general", "dot", "low_rank", "additive", "none"), default="general")
    g.add_argument("--no-input-feeding", action="store_true")
    g.add_argument("--dropout", type=float, default=0.0)
    g.add_argument("--train-embeddings", action="store_true", help="fine-tune the cross-lingual embeddings "
                                                                   "(the paper keeps them fixed)")
    g.add_argument("--tie-output", action="store_true",
                   help="score output words against their cross-lingual embeddings instead of a free "
                        "output layer (not in the paper: a decoder then emits points of the shared space, "
                        "which lets a short training learn)")


def add_args(sub):
    p = sub.add_parser("train", help="train an NMT model (unsupervised by default)",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--pair", default="de-en", choices=("de-en", "fr-en"))
    p.add_argument("--work", default=None, help="data directory (default runs/work/<pair>)")
    p.add_argument("--model", default=None, help="model directory (default <work>/nmt/<variant>)")
    p.add_argument("--impl", choices=IMPLS, default="fastrnn",
                   help="fastrnn blocks, or the same model from torch.nn modules (the speed baseline)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--backend", default=None,
                   help="fastrnn backend for --impl fastrnn (cuda, triton, cpu, reference); default: fastrnn picks")
    p.add_argument("--steps", type=int, default=1000, help="steps; each is one mini-batch per objective")
    p.add_argument("--max-time", type=float, default=0.0, help="stop after this many seconds of training")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--clip", type=float, default=5.0)
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--max-vocab", type=int, default=50000, help="words each decoder writes (the most frequent)")
    p.add_argument("--max-src-vocab", type=int, default=0,
                   help="words the encoder reads, >= --max-vocab (0: as many as --max-vocab; -1: every "
                        "mapped word); rarer source words keep their fixed cross-lingual vectors "
                        "instead of becoming <unk>")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads per process (0: torch's default). On a shared machine 1 is often fastest: "
                        "an oversubscribed OpenMP pool spins")
    p.add_argument("--eval-every", type=int, default=500, help="dev BLEU every N steps (0: never)")
    p.add_argument("--save-every", type=int, default=100, help="checkpoint every N steps")
    p.add_argument("--log-every", type=int, default=1, help="history rows are means over N steps")
    p.add_argument("--dev-sents", type=int, default=300,
                   help="dev sentences translated for the periodic BLEU and the model selection (0: all)")
    p.add_argument("--select", choices=SELECT, default="mean",
                   help="model selection on dev BLEU: mean (model.pt, the best mean of both directions) or "
                        "direction (also model.<src>-<tgt>.pt, each direction's best; translate and evaluate "
                        "use it for that direction)")
    p.add_argument("--resume", action="store_true", help="continue from <model>/checkpoint.pt")
    v = p.add_argument_group("variants (the rows of the paper's table)")
    v.add_argument("--no-backtranslation", action="store_true", help="denoising only")
    v.add_argument("--bpe", action="store_true", help="BPE units instead of words")
    v.add_argument("--bt-init-steps", type=int, default=0, metavar="N",
                   help="back-translate with the word-by-word model (part 1's baseline: CSLS nearest "
                        "neighbours in the shared space) for the first N steps, then with the model being "
                        "trained (Lample et al. 2018's start; 0: Artetxe et al. 2017's, the default)")
    v.add_argument("--parallel", default=None, metavar="N|all",
                   help="semi-supervised: N parallel pairs as a third objective")
    v.add_argument("--supervised", default=None, metavar="N|all", help="supervised on N parallel pairs only")
    add_model_args(p)
    p.add_argument("--embed-rms", type=float, default=0.0,
                   help="scale the fixed cross-lingual embeddings to this per-coordinate RMS (0: keep the "
                        "mapped scale, rows of norm ~0.8); 1.0 speeds up learning, with --tie-output most")
    p.add_argument("--ema", type=float, default=0.0, metavar="DECAY",
                   help="keep an exponential moving average of the weights (e.g. 0.99) for dev BLEU, model "
                        "selection and model.pt; back-translation uses the current weights (0: off)")
    p.add_argument("--ema-bt", action="store_true",
                   help="with --ema: back-translate with the averaged weights too (a mean teacher)")
    p.add_argument("--save-replicas", action="store_true", help=argparse_suppress())
    p.set_defaults(func=cmd_train)


def argparse_suppress():
    import argparse
    return argparse.SUPPRESS
