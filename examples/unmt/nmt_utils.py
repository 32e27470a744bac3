"""Helpers of the NMT half of the example: vocabularies, text <-> ids, noise, batches, files.

Vocabulary design (issue 8, item 1). Each language keeps its own word list, taken from its
mapped embeddings (<work>/emb/mapped.<l>.pt, words by descending frequency), so "die" (de) and
"die" (en) stay two words. Ids are *local* to a language: 0 pad, 1 bos, 2 eos, 3 unk, then the
words. The shared encoder reads a *joint* table, the two languages' mapped matrices
concatenated after the 4 special rows (joint id = local id + the language's offset); each
decoder reads and predicts only its own language's local ids, so a decoder's softmax is never
wasted on the other language. Separate tables concatenated need no prefixing of colliding
words and keep each decoder's output layer at the size of its own vocabulary.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import random
import tempfile
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence

import torch

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
NUM_SPECIAL = len(SPECIALS)


# ----------------------------------------------------------------------------- files

@contextlib.contextmanager
def atomic_write(path, mode="w", encoding="utf-8"):
    """Write to a temp file next to ``path`` and os.replace it in: a killed run leaves either
    the old file or the new one, never half of one."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)),
                               prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    os.close(fd)
    try:
        with open(tmp, mode, **({} if "b" in mode else {"encoding": encoding})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)           # mkstemp makes 0600; outputs are ordinary files
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_torch_save(obj, path) -> None:
    with atomic_write(path, "wb") as f:
        torch.save(obj, f)


def write_json(obj, path) -> None:
    with atomic_write(path) as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def read_lines(path) -> List[str]:
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def load_mapped(path):
    """<work>/emb/mapped.<l>.pt -> (words, vectors [V,E] float32) (the contract's format)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: run `unmt.py embed` first (part 1 writes it)")
    obj = torch.load(path, map_location="cpu", weights_only=False)
    words, vectors = obj["words"], obj["vectors"].float()
    if vectors.dim() != 2 or vectors.shape[0] != len(words):
        raise ValueError(f"{path}: vectors must be [len(words), E], got {tuple(vectors.shape)} "
                         f"for {len(words)} words")
    return list(words), vectors


# ----------------------------------------------------------------------------- tokenization

try:                      # part 1's helpers, so that both halves tokenize the same way
    import common as _common
except ImportError:       # part 1 not installed next to this file: the same recipe, here
    _common = None

_moses: Dict[tuple, object] = {}


def _moses_tools(lang):
    if lang not in _moses:
        from sacremoses import MosesDetokenizer, MosesPunctNormalizer, MosesTokenizer
        _moses[lang] = (MosesPunctNormalizer(lang=lang), MosesTokenizer(lang=lang), MosesDetokenizer(lang=lang))
    return _moses[lang]


def tokenize(line: str, lang: str) -> List[str]:
    """Raw sentence -> lowercased tokens, exactly as part 1 writes the *.tok files."""
    if _common is not None and hasattr(_common, "tokenize"):
        return _common.tokenize(line, lang).split()
    norm, tok, _ = _moses_tools(lang)
    return tok.tokenize(norm.normalize(line), escape=False, return_str=True).lower().split()


def detokenize(tokens: Sequence[str], lang: str) -> str:
    if _common is not None and hasattr(_common, "detokenize"):
        return _common.detokenize(list(tokens), lang)
    return _moses_tools(lang)[2].detokenize(list(tokens))


def default_work(pair: str) -> str:
    """runs/work/<pair> at the repository root (the contract's default)."""
    if _common is not None and hasattr(_common, "work_dir"):
        return str(_common.work_dir(pair))
    return os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                        "runs", "work", pair)


# ----------------------------------------------------------------------------- vocabularies

@dataclass
class Vocab:
    """One language's words (local ids) and, for the BPE variant, its sentencepiece model."""
    lang: str
    words: List[str]
    offset: int = 0                      # joint id = local id + offset for local ids >= 4
    bpe_model: Optional[str] = None
    # The decoder writes only the first n_out words (the most frequent); the encoder reads all of
    # `words` (its table is fixed, so a longer list costs nothing per step). None: all of them.
    n_out: Optional[int] = None
    index: Dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self.index = {w: i + NUM_SPECIAL for i, w in enumerate(self.words)}
        self.n_out = len(self.words) if self.n_out is None else min(self.n_out, len(self.words))
        self._sp = None

    def __len__(self):
        """The decoder's vocabulary size (specials + the words it can write)."""
        return NUM_SPECIAL + self.n_out

    def as_target(self, ids: torch.Tensor) -> torch.Tensor:
        """Local ids read by the encoder -> ids the decoder can write (rarer words -> <unk>)."""
        return torch.where(ids >= len(self), torch.full_like(ids, UNK), ids)

    @property
    def sp(self):
        if self._sp is None and self.bpe_model:
            import sentencepiece as spm
            self._sp = spm.SentencePieceProcessor(model_file=self.bpe_model)
        return self._sp

    def units(self, tokens: Sequence[str]) -> List[str]:
        """Word tokens -> the units the model reads (BPE pieces in the BPE variant)."""
        if self.sp is None:
            return list(tokens)
        return self.sp.encode(" ".join(tokens), out_type=str) if tokens else []

    def encode(self, tokens: Sequence[str]) -> List[int]:
        return [self.index.get(u, UNK) for u in self.units(tokens)]

    def decode(self, ids: Sequence[int], src_tokens: Optional[Sequence[str]] = None,
               attn: Optional[torch.Tensor] = None, unk_words: Optional[Dict[str, str]] = None) -> List[str]:
        """Local ids -> word tokens. An <unk> becomes the source word it attends to most (when
        attention is given), or that word's entry in `unk_words` (its translation), else is
        dropped: copying is the right guess for names."""
        out = []
        for j, i in enumerate(ids):
            i = int(i)
            if i in (PAD, BOS, EOS):
                continue
            if i == UNK:
                if attn is not None and src_tokens:
                    w = src_tokens[int(attn[j, :len(src_tokens)].argmax())]
                    out.append(unk_words.get(w, w) if unk_words else w)
                continue
            out.append(self.words[i - NUM_SPECIAL])
        if self.sp is not None:
            return self.sp.decode(out).split() if out else []
        return out

    def to_joint(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.where(ids >= NUM_SPECIAL, ids + self.offset, ids)

    def state(self):
        return {"lang": self.lang, "words": self.words, "offset": self.offset,
                "bpe_model": self.bpe_model, "n_out": self.n_out}

    @classmethod
    def from_state(cls, s):
        return cls(s["lang"], s["words"], s["offset"], s.get("bpe_model"), s.get("n_out"))


class SharedSpace:
    """Nearest words across languages in the encoder's joint table, by CSLS (Conneau et al. 2018),
    the rule of the word-by-word baseline. Hubness penalties are computed once per direction."""

    def __init__(self, joint: torch.Tensor, vocabs: Dict[str, "Vocab"], csls_k: int = 10):
        self.vocabs, self.csls_k = vocabs, csls_k
        self.rows = {lang: torch.nn.functional.normalize(
            joint[NUM_SPECIAL + v.offset:NUM_SPECIAL + v.offset + len(v.words)].detach().float().cpu(), dim=1)
            for lang, v in vocabs.items()}
        self._penalty: Dict[tuple, torch.Tensor] = {}

    def nearest(self, src: str, tgt: str, local_ids: torch.Tensor) -> torch.Tensor:
        """Local ids (>= NUM_SPECIAL) of `src` words -> local ids of their nearest `tgt` words."""
        from mapping import knn_mean
        x, z = self.rows[src], self.rows[tgt]
        if (src, tgt) not in self._penalty:
            self._penalty[(src, tgt)] = knn_mean(z, x, self.csls_k)   # r_X(z); r_Z(x) is constant per query
        out = torch.empty(len(local_ids), dtype=torch.long)
        for i in range(0, len(local_ids), 4096):
            q = x[local_ids[i:i + 4096] - NUM_SPECIAL]
            out[i:i + 4096] = (2 * q @ z.T - self._penalty[(src, tgt)][None]).argmax(1) + NUM_SPECIAL
        return out

    def word_by_word(self, src: str, tgt: str) -> torch.Tensor:
        """[len(src words) + NUM_SPECIAL] table: each src local id -> its translation's local id."""
        n = NUM_SPECIAL + len(self.vocabs[src].words)
        return torch.cat([torch.arange(NUM_SPECIAL), self.nearest(src, tgt, torch.arange(NUM_SPECIAL, n))])


def bpe_embeddings(sp_path: str, words: List[str], vectors: torch.Tensor, corpus: List[List[str]],
                   seed: int = 0):
    """Vectors for a language's BPE pieces in the shared space, so the cross-lingual signal of the
    word mapping carries over to subwords. A piece that is a whole mapped word ("▁the") gets that
    word's vector; any other piece the mean mapped vector of the words it appears in, weighted by
    their counts in `corpus` (equal weights let the many rare words drown the frequent ones that
    the piece mostly stands for). Pieces no mapped word contains get a small random vector.
    Returns (pieces in corpus frequency order, vectors)."""
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=sp_path)
    pieces: Dict[str, int] = {}
    counts: Dict[str, int] = {}
    for toks in corpus:
        for w in toks:
            counts[w] = counts.get(w, 0) + 1
        for p in sp.encode(" ".join(toks), out_type=str):
            pieces[p] = pieces.get(p, 0) + 1
    order = sorted(pieces, key=lambda p: -pieces[p])
    pos = {p: i for i, p in enumerate(order)}
    acc = torch.zeros(len(order), vectors.shape[1], dtype=torch.float64)
    cnt = torch.zeros(len(order), dtype=torch.float64)
    whole: Dict[int, int] = {}                      # piece -> the mapped word it is
    for k, w in enumerate(words):
        split = sp.encode(w, out_type=str)
        ps = [pos[p] for p in split if p in pos]
        if len(split) == 1 and ps:
            whole[ps[0]] = k
        c = max(counts.get(w, 0), 1)
        for i in ps:
            acc[i] += c * vectors[k].double()
            cnt[i] += c
    g = torch.Generator().manual_seed(seed)
    out = torch.randn(len(order), vectors.shape[1], generator=g) * 0.01
    have = cnt > 0
    out[have] = (acc[have] / cnt[have, None]).float()
    for i, k in whole.items():
        out[i] = vectors[k]
    return order, out


def build_vocabs(work: str, src: str, tgt: str, max_vocab: int, bpe: bool = False, max_src_vocab: int = 0):
    """Both languages' vocabularies, the joint encoder table [4 + V_src + V_tgt, E] and each
    language's decoder table [4 + V_out, E]. The decoders write the max_vocab most frequent units
    of their language; the encoder reads max_src_vocab of them (0: as many as the decoders; -1:
    every mapped word), so rarer source words keep their cross-lingual vector."""
    vocabs, mats = [], []
    offset = 0
    n_in = max_vocab if max_src_vocab == 0 else (None if max_src_vocab < 0 else max(max_src_vocab, max_vocab))
    for lang in (src, tgt):
        words, vectors = load_mapped(os.path.join(work, "emb", f"mapped.{lang}.pt"))
        words, vectors = words[:n_in], vectors[:n_in]
        bpe_model = None
        if bpe:
            bpe_model = os.path.join(work, "data", "bpe.model")
            if not os.path.exists(bpe_model):
                raise FileNotFoundError(f"{bpe_model} not found: `unmt.py prepare` writes it")
            corpus = [line.split() for line in read_lines(os.path.join(work, "data", f"mono.{lang}.tok"))]
            words, vectors = bpe_embeddings(bpe_model, words, vectors, corpus)
            words, vectors = words[:n_in], vectors[:n_in]
        vocabs.append(Vocab(lang, words, offset, bpe_model, n_out=max_vocab))
        mats.append(vectors)
        offset += len(words)
    dim = mats[0].shape[1]
    joint = torch.cat([torch.zeros(NUM_SPECIAL, dim)] + mats)
    return vocabs, joint, [torch.cat([torch.zeros(NUM_SPECIAL, dim), m[:v.n_out]]) for m, v in zip(mats, vocabs)]


# ----------------------------------------------------------------------------- noise and batches

def add_noise(ids: List[int], g: random.Random) -> List[int]:
    """Artetxe et al. 2017, 3.2: len//2 random swaps of contiguous words. A permutation, so the
    multiset of tokens is kept."""
    out = list(ids)
    n = len(out)
    for _ in range(n // 2):
        i = g.randrange(n - 1)
        out[i], out[i + 1] = out[i + 1], out[i]
    return out


def pad_batch(seqs: Sequence[Sequence[int]], bos: bool = False, eos: bool = False):
    """Lists of ids -> (ids [B,L] long padded with PAD, lengths [B] long)."""
    seqs = [([BOS] if bos else []) + list(s) + ([EOS] if eos else []) for s in seqs]
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    out = torch.full((len(seqs), max(1, int(lengths.max()) if len(seqs) else 1)), PAD, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, :len(s)] = torch.tensor(s, dtype=torch.long)
    return out, lengths


class Stream:
    """An endless, resumable stream of batches of example indices.

    Each epoch is a fresh permutation drawn from (seed, name, epoch), so the order is a pure
    function of the position: (epoch, pos) is all a checkpoint needs to carry. Under data
    parallelism every rank walks the same global order and takes its slice of each global batch.
    """

    def __init__(self, name: str, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        if n == 0:
            raise ValueError(f"stream {name!r} has no examples")
        self.name, self.n, self.batch_size, self.seed = name, n, batch_size, seed
        self.rank, self.world = rank, world
        self.epoch, self.pos = 0, 0
        self._perm = None

    def _order(self):
        if self._perm is None:
            h = sum((i + 1) * ord(c) for i, c in enumerate(self.name))
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + h * 7919 + self.epoch)
            self._perm = torch.randperm(self.n, generator=g).tolist()
        return self._perm

    def next(self) -> List[int]:
        gb = self.batch_size * self.world
        order = self._order()
        if self.pos + gb > self.n and self.pos > 0:
            self.epoch, self.pos, self._perm = self.epoch + 1, 0, None
            order = self._order()
        glob = [order[(self.pos + i) % self.n] for i in range(gb)]
        self.pos += gb
        return glob[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]

    def state(self):
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state(self, s):
        self.epoch, self.pos, self._perm = s["epoch"], s["pos"], None


def bucket_by_length(n_items: Sequence[int], batch_tokens: int) -> Iterator[List[int]]:
    """Indices sorted by length, cut into batches of about batch_tokens source tokens (for
    inference: similar lengths waste little padding)."""
    order = sorted(range(len(n_items)), key=lambda i: n_items[i])
    batch, longest = [], 0
    for i in order:
        longest = max(longest, n_items[i], 1)
        if batch and longest * (len(batch) + 1) > batch_tokens:
            yield batch
            batch, longest = [], max(n_items[i], 1)
        batch.append(i)
    if batch:
        yield batch


def rng_state():
    return {"torch": torch.get_rng_state(), "python": random.getstate()}


def set_rng_state(s):
    torch.set_rng_state(s["torch"])
    random.setstate(s["python"])


def fmt_time(seconds: float) -> str:
    seconds = int(math.ceil(seconds))
    h, m, s = seconds // 3600, seconds // 60 % 60, seconds % 60
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"
