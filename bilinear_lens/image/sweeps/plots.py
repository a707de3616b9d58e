"""Figures of the image sweeps (matplotlib Agg, PNG). Eigenvector and mask pictures use the diverging
map of :mod:`bilinear_lens.image.figures` (red positive, blue negative), each tile scaled to its own
``max |value|``, which every figure states next to its colour bar."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from bilinear_lens.image.figures import draw_gray, draw_pattern, per_tile_colorbar, save_figure  # noqa: E402

PathLike = Union[str, Path]


def rel(path: Path, root: Path) -> str:
    return str(Path(path).relative_to(root))


def align_to_column(pics: Tensor, col: int) -> Tensor:
    """Flip ``pics [rows, cols, P]`` so every tile has a non-negative inner product with column ``col``."""
    s = torch.sign(torch.einsum("rcp,rp->rc", pics, pics[:, col]))
    return pics * torch.where(s == 0, torch.ones_like(s), s)[..., None]


def tile_grid(pics: Tensor, row_labels: Sequence[str], col_labels: Sequence[str], path: PathLike, title: str,
              size: int = 28, gray: bool = False) -> Path:
    """A grid of pictures ``pics [rows, cols, size*size]``; diverging colours (each tile scaled to its own
    max |value|, stated on the colour bar) or grayscale pixels in [0, 1] (``gray``)."""
    p = pics.detach().cpu().double().numpy()
    R, C = p.shape[:2]
    fig, axes = plt.subplots(R, C, figsize=(0.8 * C + 1.6, 0.8 * R + 0.9), squeeze=False)
    for r in range(R):
        for c in range(C):
            ax = axes[r, c]
            (draw_gray if gray else draw_pattern)(ax, p[r, c], size)
            if r == 0:
                ax.set_title(col_labels[c], fontsize=7)
            if c == 0:
                ax.set_ylabel(row_labels[r], fontsize=8, rotation=0, ha="right", va="center")
    fig.suptitle(title, fontsize=8.5)
    fig.subplots_adjust(left=0.12, right=0.86, bottom=0.02, top=1 - 0.55 / (0.8 * R + 0.9), wspace=0.05,
                        hspace=0.08)
    if not gray:
        per_tile_colorbar(fig, fig.add_axes([0.89, 0.25, 0.02, 0.5]))
    return save_figure(fig, path)


def _band(ax: "plt.Axes", x: np.ndarray, ys: np.ndarray, label: str, color: Any, log: bool = False) -> None:
    mean = ys.mean(0)
    ax.plot(x, mean, "o-", ms=2.5, lw=1.2, color=color, label=label)
    if len(ys) > 1:
        ax.fill_between(x, ys.min(0), ys.max(0), color=color, alpha=0.2, lw=0)


def sizes_similarity(metrics: Dict[str, Any], path: PathLike) -> Path:
    """Best-match |cos| to the reference width against rank; size-by-size heat map of the top eigenvector."""
    st = metrics["settings"]
    sizes = [r["d_hidden"] for r in metrics["by_size"]]
    vs = metrics["vs_reference"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [1.1, 1]})
    cmap = plt.get_cmap("viridis")
    for i, d in enumerate(sizes):
        y = vs[str(d)]["mean_by_rank"]
        a1.plot(np.arange(1, len(y) + 1), y, "o-", ms=3, color=cmap(i / max(1, len(sizes) - 1)), label=f"d={d}")
    y = vs["untrained"]["mean_by_rank"]
    a1.plot(np.arange(1, len(y) + 1), y, "k--", lw=1, label="untrained d=%d" % st["reference"])
    a1.set_ylim(0, 1)
    a1.set_xticks(np.arange(1, len(y) + 1))
    a1.set_xlabel("rank of the eigenvector (most positive first)")
    a1.set_ylabel(f"best-match |cos| to d={st['reference']}")
    a1.set_title("similarity to the reference width (mean over digits, seed pairs)", fontsize=8.5)
    a1.legend(fontsize=7, ncol=2)
    a1.grid(alpha=0.3)
    h = np.array(metrics["heatmap_top"], dtype=float)
    im = a2.imshow(h, cmap="viridis", vmin=0, vmax=1)
    for i in range(len(sizes)):
        for j in range(len(sizes)):
            if np.isfinite(h[i, j]):
                a2.text(j, i, f"{h[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if h[i, j] < 0.6 else "black")
    a2.set_xticks(range(len(sizes)))
    a2.set_xticklabels(sizes, fontsize=7)
    a2.set_yticks(range(len(sizes)))
    a2.set_yticklabels(sizes, fontsize=7)
    a2.set_xlabel("d_hidden")
    a2.set_ylabel("d_hidden")
    a2.set_title("|cos| of the top eigenvectors (diagonal: across seeds)", fontsize=8.5)
    fig.colorbar(im, ax=a2, fraction=0.046, pad=0.04, label="|cos|")
    fig.tight_layout()
    return save_figure(fig, path)


def sizes_truncation(metrics: Dict[str, Any], path: PathLike) -> Path:
    """Accuracy and error (log) against k per width: mean over seeds and the min-max band."""
    from bilinear_lens.image.figures import log_percent_axis

    sizes = [r["d_hidden"] for r in metrics["by_size"]]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    cmap = plt.get_cmap("viridis")
    lo = 100.0
    for i, d in enumerate(sizes):
        ms = [m for m in metrics["members"] if m["d_hidden"] == d]
        k = np.asarray(ms[0]["truncation"]["k"])
        acc = 100 * np.array([m["truncation"]["accuracy"] for m in ms])
        color = cmap(i / max(1, len(sizes) - 1))
        _band(a1, k, acc, f"d={d}", color)
        _band(a2, k, np.maximum(100 - acc, 1e-2), f"d={d}", color)
        lo = min(lo, float(acc.min()))
    a1.set_ylim(max(0.0, lo - 3), 100)
    a1.set_xlabel("eigenvectors kept per digit (top k by |λ|)")
    a1.set_ylabel("test accuracy (%)")
    a1.legend(fontsize=7, ncol=2)
    a2.set_yscale("log")
    log_percent_axis(a2)
    a2.set_xlabel("eigenvectors kept per digit")
    a2.set_ylabel("test error (%, log scale)")
    for ax in (a1, a2):
        ax.grid(alpha=0.3, which="both")
    fig.suptitle("Truncation per width (line: mean over seeds; band: min to max)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def bars(ax: "plt.Axes", names: List[str], values: List[List[float]], ylabel: str,
         reference: Optional[List[Optional[float]]] = None, fmt: str = "{:.2f}") -> None:
    """One bar per name (mean over seeds), dots for the seeds, and a reference marker when given."""
    x = np.arange(len(names))
    means = [float(np.mean(v)) for v in values]
    ax.bar(x, means, color="tab:blue", alpha=0.6, label="measured (mean)")
    for i, v in enumerate(values):
        ax.plot([i] * len(v), v, "k.", ms=4)
        ax.text(i, means[i], fmt.format(means[i]), ha="center", va="bottom", fontsize=7)
    if reference is not None:
        pts = [(i, r) for i, r in enumerate(reference) if r is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "r_", ms=18, mew=2, label="published reproduction")
    ax.set_xticks(x)
    ax.set_xticklabels(names, fontsize=7.5, rotation=15)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.grid(alpha=0.3, axis="y")
