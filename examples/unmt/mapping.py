"""Fully unsupervised cross-lingual embedding mapping (Artetxe, Labaka and Agirre, ACL 2018:
"A robust self-learning method for fully unsupervised cross-lingual mappings of word
embeddings"), in PyTorch so it runs on the GPU when there is one.

Shapes: X [Vs, d] source embeddings, Z [Vt, d] target embeddings, rows are words sorted by
descending frequency. A dictionary is a pair of index tensors (src_idx, trg_idx) of equal length.

Steps (paper section 3):
  1. normalisation: unit length, mean centering, unit length again;
  2. initial dictionary without supervision: words are compared through the sorted rows of
     sqrt(X X^T X X^T) = U S U^T (X = U S V^T), which do not depend on the unknown rotation;
  3. self-learning: orthogonal mapping by SVD (Procrustes) from the current dictionary, then a
     new dictionary by CSLS nearest neighbours in both directions, with stochastic induction
     (each candidate kept with probability p; p doubles whenever the objective stalls);
  4. final refinement: whitening, orthogonal mapping, re-weighting, de-whitening.
Speed levers (2-core CPU, 20k words): float32 matmuls in row chunks, a smaller induction
vocabulary while p < 1, and early stopping on the objective.
"""
from __future__ import annotations

import math
import re

import torch
from tqdm import tqdm

CHUNK = 4096


def normalize(x: torch.Tensor) -> torch.Tensor:
    """Unit length, centering, unit length (VecMap's `unit center unit`)."""
    x = torch.nn.functional.normalize(x.float(), dim=1)
    x = x - x.mean(0, keepdim=True)
    return torch.nn.functional.normalize(x, dim=1)


def knn_mean(queries: torch.Tensor, keys: torch.Tensor, k: int, chunk: int = CHUNK) -> torch.Tensor:
    """r(q) = mean of the k largest cosine similarities <q, key>: CSLS's hubness penalty [Nq]."""
    k = min(k, keys.shape[0])
    out = torch.empty(queries.shape[0], device=queries.device, dtype=queries.dtype)
    for i in range(0, queries.shape[0], chunk):
        out[i:i + chunk] = (queries[i:i + chunk] @ keys.T).topk(k, dim=1).values.mean(1)
    return out


def retrieve(xq: torch.Tensor, z: torch.Tensor, topn: int = 1, csls_k: int = 10,
             x_all: torch.Tensor | None = None, chunk: int = CHUNK) -> torch.Tensor:
    """Top-n target rows of z for each query row of xq [Nq, topn], ranked by
    CSLS(x, z) = 2 cos(x, z) - r_Z(x) - r_X(z) (Conneau et al. 2018), or by cosine when
    csls_k == 0. r_X(z) is taken over x_all (default: the queries). Rows need not be unit."""
    xq = torch.nn.functional.normalize(xq.float(), dim=1)
    z = torch.nn.functional.normalize(z.float(), dim=1)
    penalty = None
    if csls_k > 0:
        x_all = xq if x_all is None else torch.nn.functional.normalize(x_all.float(), dim=1)
        penalty = knn_mean(z, x_all, csls_k, chunk)  # r_X(z); r_Z(x) is constant per query
    out = torch.empty(xq.shape[0], min(topn, z.shape[0]), dtype=torch.long, device=xq.device)
    for i in range(0, xq.shape[0], chunk):
        s = xq[i:i + chunk] @ z.T
        if penalty is not None:
            s = 2 * s - penalty[None]
        out[i:i + chunk] = s.topk(out.shape[1], dim=1).indices
    return out


def induce(xw: torch.Tensor, zw: torch.Tensor, keep_prob: float, csls_k: int,
           generator: torch.Generator | None = None, chunk: int = CHUNK):
    """One dictionary induction step in both directions by CSLS.

    Returns (fwd [ns]: best target per source word, bwd [nt]: best source per target word,
    objective: mean best CSLS over both directions, before the stochastic dropout). With
    keep_prob < 1 every candidate pair is kept with that probability before the argmax
    (stochastic dictionary induction, paper section 3.3)."""
    # Only row-wise reductions (column-wise topk/max are several times slower on the CPU):
    # S = X Z^T is kept for the forward direction, S^T is recomputed by blocks for the
    # backward one, which needs r_X before it starts and gives r_Z to the forward pass.
    ns, nt = xw.shape[0], zw.shape[0]
    dev = xw.device
    k = min(csls_k, ns, nt)
    sim = torch.empty(ns, nt, device=dev, dtype=xw.dtype)
    knn_x = torch.zeros(ns, device=dev, dtype=xw.dtype)
    for i in range(0, ns, chunk):
        s = torch.matmul(xw[i:i + chunk], zw.T, out=sim[i:i + chunk])
        if k > 0:
            knn_x[i:i + chunk] = s.topk(k, dim=1).values.mean(1)
    knn_z = torch.zeros(nt, device=dev, dtype=xw.dtype)
    bwd = torch.empty(nt, dtype=torch.long, device=dev)
    bwd_best = torch.empty(nt, device=dev, dtype=xw.dtype)
    for j in range(0, nt, chunk):
        t = zw[j:j + chunk] @ xw.T
        if k > 0:
            knn_z[j:j + chunk] = t.topk(k, dim=1).values.mean(1)
        best, bwd[j:j + chunk] = _best_csls(t, knn_x, keep_prob, generator)
        bwd_best[j:j + chunk] = best - knn_z[j:j + chunk]
    fwd = torch.empty(ns, dtype=torch.long, device=dev)
    fwd_best = torch.empty(ns, device=dev, dtype=xw.dtype)
    for i in range(0, ns, chunk):
        best, fwd[i:i + chunk] = _best_csls(sim[i:i + chunk], knn_z, keep_prob, generator)
        fwd_best[i:i + chunk] = best - knn_x[i:i + chunk]
    objective = (fwd_best.mean() + bwd_best.mean()).item() / 2
    return fwd, bwd, objective


def _best_csls(s: torch.Tensor, penalty: torch.Tensor, keep_prob: float, generator):
    """Per row of similarities s [n, m]: the best value of 2 s - penalty (CSLS without the
    row's own constant) and the index chosen after dropping each candidate with probability
    1 - keep_prob.

    Dropout over the whole row is drawn only on its `top` best candidates: the survivor with
    the highest score is the first surviving one in sorted order, which lies among them unless
    all `top` are dropped, a (1 - keep_prob)^top <= 1e-4 event where the last one is taken."""
    c = 2 * s - penalty[None]
    if keep_prob >= 1:
        best, idx = c.max(1)
        return best, idx
    top = min(c.shape[1], math.ceil(math.log(1e-4) / math.log1p(-keep_prob)))
    vals, idx = c.topk(top, dim=1)
    alive = torch.rand(vals.shape, device=s.device, generator=generator) < keep_prob
    alive[:, -1] = True
    pick = alive.to(torch.int8).argmax(1, keepdim=True)  # first survivor
    return vals[:, 0], idx.gather(1, pick)[:, 0]


def _sorted_similarity(x: torch.Tensor) -> torch.Tensor:
    """Rows of sqrt(M^2), M = X X^T, each sorted: a rotation-invariant word signature."""
    u, s, _ = torch.linalg.svd(x.double(), full_matrices=False)
    m = ((u * s) @ u.T).float()
    return normalize(m.sort(dim=1).values)


def init_unsupervised(x: torch.Tensor, z: torch.Tensor, n: int = 4000, csls_k: int = 10):
    """Initial dictionary from the similarity distributions of the n most frequent words."""
    n = min(n, x.shape[0], z.shape[0])
    xs, zs = _sorted_similarity(x[:n]), _sorted_similarity(z[:n])
    fwd, bwd, _ = induce(xs, zs, 1.0, csls_k)
    idx = torch.arange(n, device=x.device)
    return torch.cat([idx, bwd]), torch.cat([fwd, idx])


def init_identical(src_words: list[str], trg_words: list[str], pattern: str | None = None,
                   device=None):
    """Weak supervision: the words spelt the same in both vocabularies (optionally only those
    matching `pattern`, e.g. numerals)."""
    trg_pos = {w: j for j, w in enumerate(trg_words)}
    rx = re.compile(pattern) if pattern else None
    pairs = [(i, trg_pos[w]) for i, w in enumerate(src_words)
             if w in trg_pos and (rx is None or rx.fullmatch(w))]
    if not pairs:
        raise ValueError("no shared " + ("numerals" if pattern else "words") +
                         " between the two vocabularies to start from")
    src, trg = zip(*pairs)
    return (torch.tensor(src, dtype=torch.long, device=device),
            torch.tensor(trg, dtype=torch.long, device=device))


def orthogonal(x: torch.Tensor, z: torch.Tensor, src_idx, trg_idx) -> torch.Tensor:
    """W = argmin ||X[src] W - Z[trg]|| over orthogonal W: W = V U^T with U S V^T = Z^T X."""
    u, _, vt = torch.linalg.svd((z[trg_idx].T @ x[src_idx]).double())
    return (vt.T @ u.T).float()


def _whitening(m: torch.Tensor) -> torch.Tensor:
    """(M^T M)^(-1/2) computed from the SVD of M."""
    _, s, vt = torch.linalg.svd(m.double(), full_matrices=False)
    return vt.T @ torch.diag(1 / s) @ vt


def refine(x: torch.Tensor, z: torch.Tensor, src_idx, trg_idx, reweight: float = 0.5):
    """Final multi-step mapping (Artetxe et al. AAAI 2018): whitening, orthogonal mapping,
    re-weighting by the singular values, de-whitening each side with its own whitening."""
    wx1, wz1 = _whitening(x[src_idx]), _whitening(z[trg_idx])
    xw, zw = x.double() @ wx1, z.double() @ wz1
    wx2, s, wz2t = torch.linalg.svd(xw[src_idx].T @ zw[trg_idx])
    wz2 = wz2t.T
    xw, zw = xw @ wx2 * s ** reweight, zw @ wz2 * s ** reweight
    xw = xw @ (wx2.T @ torch.linalg.inv(wx1) @ wx2)
    zw = zw @ (wz2.T @ torch.linalg.inv(wz1) @ wz2)
    return xw.float(), zw.float()


def self_learning(x: torch.Tensor, z: torch.Tensor, src_idx, trg_idx, cutoff: int = 20000,
                  early_cutoff: int = 5000, csls_k: int = 10, keep_prob: float = 0.1,
                  patience: int = 5, threshold: float = 1e-4, max_iter: int = 500,
                  seed: int = 0, log=None):
    """Self-learning loop from an initial dictionary. x, z are normalised [V, d] tensors.

    Returns (mapped x, mapped z, (src_idx, trg_idx), history)."""
    gen = torch.Generator(device=x.device).manual_seed(seed)
    best, last_gain, end = -math.inf, 0, False
    history = []
    bar = tqdm(range(1, max_iter + 1), desc="self-learning", unit="it")
    for it in bar:
        w = orthogonal(x, z, src_idx, trg_idx)
        if end:
            break
        n = cutoff if keep_prob >= 1 else min(early_cutoff, cutoff)
        ns, nt = min(n, x.shape[0]), min(n, z.shape[0])
        fwd, bwd, obj = induce(x[:ns] @ w, z[:nt], keep_prob, csls_k, gen)
        src_idx = torch.cat([torch.arange(ns, device=x.device), bwd])
        trg_idx = torch.cat([fwd, torch.arange(nt, device=x.device)])
        history.append({"iter": it, "keep_prob": keep_prob, "vocab": n, "objective": obj})
        bar.set_postfix(p=keep_prob, n=n, obj=f"{obj:.4f}")
        if log:
            log(history[-1])
        if obj - best >= threshold:
            best, last_gain = obj, it
        if it - last_gain > patience:
            if keep_prob >= 1:
                end = True
            else:
                keep_prob = min(1.0, 2 * keep_prob)
                # the induction vocabulary may grow: objectives are no longer comparable
                best, last_gain = -math.inf, it
    bar.close()
    xw, zw = refine(x, z, src_idx, trg_idx)
    return xw, zw, (src_idx, trg_idx), history
