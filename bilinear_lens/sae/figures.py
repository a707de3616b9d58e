"""Matplotlib figures (Agg) for the ``compare`` report; every function writes one small PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from bilinear_lens.reports.figures import save_figure  # noqa: E402

PAPER_K1_MEAN = 0.65  # P2 §5.2: mean correlation with one eigenvector


def _save(fig: "plt.Figure", path: Union[str, Path]) -> Path:
    fig.tight_layout()
    return save_figure(fig, path, dpi=90, tight=False)


def lowrank_curve(ks: Sequence[int], mean: Sequence[float], frac: Sequence[float],
                  path: Union[str, Path]) -> Path:
    """Mean correlation and fraction of features above 0.75 against k (log2 axis)."""
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    ax.plot(ks, mean, "o-", label="mean correlation")
    ax.plot(ks, frac, "s--", label="fraction > 0.75")
    ax.axhline(PAPER_K1_MEAN, color="grey", lw=0.8, ls=":", label="paper, mean at k=1 (0.65)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(ks))
    ax.set_xticklabels([str(k) for k in ks])
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("eigenvectors kept (k)")
    ax.set_ylabel("mean Pearson r (circles) and\nfraction of features with r > 0.75 (squares)", fontsize=8)
    ax.set_title("Output-SAE features from the top-k eigenvectors")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def lowrank_hist(corr: np.ndarray, ks: Sequence[int], path: Union[str, Path],
                 show: Sequence[int] = (1, 2, 8, 64)) -> Path:
    """Histograms of per-feature correlations for a few k (``corr [n_features, len(ks)]``)."""
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    bins = np.linspace(-0.2, 1.0, 25)
    for k in show:
        if k in ks:
            col = corr[:, list(ks).index(k)]
            ax.hist(col[~np.isnan(col)], bins=bins, histtype="step", lw=1.5, label=f"k={k}")
    ax.axvline(0.75, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("Pearson r per output feature")
    ax.set_ylabel("features")
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title("Distribution over output features")
    return _save(fig, path)


def interaction_heatmap(sub: np.ndarray, labels: List[int], values: np.ndarray, title: str,
                        path: Union[str, Path]) -> Path:
    """Left: the interaction sub-matrix of the top input features; right: the spectrum of ``Q``."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(8.4, 3.6), gridspec_kw={"width_ratios": [1.15, 1]})
    lim = float(np.abs(sub).max()) or 1.0
    im = a.imshow(sub, cmap="RdBu_r", vmin=-lim, vmax=lim)
    a.set_xticks(range(len(labels)))
    a.set_yticks(range(len(labels)))
    a.set_xticklabels(labels, rotation=90, fontsize=7)
    a.set_yticklabels(labels, fontsize=7)
    a.set_title("D_in Q D_in^T (top input features)", fontsize=9)
    fig.colorbar(im, ax=a, fraction=0.046)
    order = values[np.argsort(-np.abs(values), kind="stable")]  # by |λ|, signs kept
    b.bar(range(len(order)), order, color=np.where(order > 0, "tab:red", "tab:blue"), width=1.0)
    b.axhline(0, color="black", lw=0.5)
    b.set_title(f"eigenvalues of Q (top {len(order)} by |λ|)", fontsize=9)
    b.set_xlabel("rank by |λ| (red: λ > 0, blue: λ < 0)")
    b.set_ylabel("λ")
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def matching_hist(eigen: np.ndarray, random: np.ndarray, path: Union[str, Path],
                  by_rank: Optional[Dict[str, List[float]]] = None) -> Path:
    """Max ``|cos|`` of eigenvectors with input-SAE decoder rows, against random directions."""
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    bins = np.linspace(0, 1, 26)
    ax.hist(eigen, bins=bins, alpha=0.6, label=f"top eigenvector per feature (mean {eigen.mean():.2f})")
    ax.hist(random, bins=bins, alpha=0.6, label=f"random directions (mean {random.mean():.2f})")
    ax.set_xlabel("max |cos| with an input-SAE decoder direction")
    ax.set_ylabel("vectors")
    ax.legend(fontsize=8)
    ax.set_title("Do eigenvectors look like input-SAE features?")
    return _save(fig, path)
