"""``plot_attention``: an attention matrix as a heatmap PNG (target rows, source columns)."""
from __future__ import annotations

import os
from typing import Sequence

import torch


def plot_attention(weights, src_tokens: Sequence[str], tgt_tokens: Sequence[str], path) -> str:
    """Save weights [L,S] (L target tokens, S source tokens) as a heatmap PNG at ``path``.

    weights: a tensor or array; src_tokens / tgt_tokens: the labels, len S and len L.
    Returns ``path``. matplotlib is imported here, with the Agg backend, so importing fastrnn
    never needs it and no display is opened.
    """
    if isinstance(weights, torch.Tensor):
        w = weights.detach().to("cpu", torch.float64).numpy()
    else:
        import numpy as np

        w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 2:
        raise ValueError(f"weights must have shape [L, S] (target x source), got {list(w.shape)}")
    L, S = w.shape
    if len(src_tokens) != S:
        raise ValueError(f"src_tokens must have S = {S} labels (weights.shape[1]), got {len(src_tokens)}")
    if len(tgt_tokens) != L:
        raise ValueError(f"tgt_tokens must have L = {L} labels (weights.shape[0]), got {len(tgt_tokens)}")
    path = os.fspath(path)
    if not path.lower().endswith(".png"):
        raise ValueError(f"path must name a .png file, got {path!r}")

    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    # A Figure without pyplot: no global state, safe in threads and without a display.
    fig = Figure(figsize=(max(3.0, 0.45 * S + 1.5), max(2.5, 0.45 * L + 1.2)), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(w, cmap="viridis", aspect="auto", vmin=0.0, vmax=max(1e-12, float(w.max())))
    ax.set_xticks(range(S))
    ax.set_xticklabels([str(s) for s in src_tokens], rotation=90)
    ax.set_yticks(range(L))
    ax.set_yticklabels([str(s) for s in tgt_tokens])
    ax.set_xlabel("source")
    ax.set_ylabel("target")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fig.savefig(path, format="png")
    return path


__all__ = ["plot_attention"]
