"""Figures of a decomposed classifier (matplotlib, Agg backend, PNG files).

Pixel patterns use a diverging colormap centred at 0 (red positive, blue negative), each image
scaled to its own ``max |value|``, which every figure says on a colour bar (:func:`per_tile_colorbar`);
input images are grayscale. Log-scale percentage axes carry 1-2-5 tick labels (:func:`log_percent_axis`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from bilinear_lens.decomposition.hosvd import HOSVD  # noqa: E402
from bilinear_lens.decomposition.tree import EigenTree  # noqa: E402
from bilinear_lens.reports.figures import save_figure  # noqa: E402

PathLike = Union[str, Path]
CMAP = "RdBu_r"




def per_tile_colorbar(fig: "plt.Figure", cax: "plt.Axes", label: str = "value / max |value| of its own tile") -> None:
    """Colour bar for per-tile scaled patterns: -max, 0, +max of each tile (red positive, blue negative)."""
    sm = matplotlib.cm.ScalarMappable(norm=matplotlib.colors.Normalize(-1, 1), cmap=CMAP)
    bar = fig.colorbar(sm, cax=cax, ticks=[-1, 0, 1])
    bar.ax.set_yticklabels(["−max", "0", "+max"], fontsize=7)
    bar.set_label(label, fontsize=7)


LOG_TICKS = [m * 10.0 ** e for e in range(-3, 4) for m in (1, 2, 5)]


def log_percent_axis(ax: "plt.Axes") -> None:
    """1-2-5 major ticks with plain labels on a log y axis, widening the limits to the neighbouring
    1-2-5 values when fewer than three ticks would be visible."""
    lo, hi = ax.get_ylim()
    inside = [v for v in LOG_TICKS if lo <= v <= hi]
    if len(inside) < 3:
        below = [v for v in LOG_TICKS if v <= lo] or [LOG_TICKS[0]]
        above = [v for v in LOG_TICKS if v >= hi] or [LOG_TICKS[-1]]
        lo, hi = below[-1], above[0]
        inside = [v for v in LOG_TICKS if lo <= v <= hi]
        if len(inside) < 3:
            i = LOG_TICKS.index(lo)
            lo = LOG_TICKS[max(0, i - 1)]
        ax.set_ylim(lo, hi)
    ax.yaxis.set_major_locator(matplotlib.ticker.FixedLocator(LOG_TICKS))
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def draw_pattern(ax: "plt.Axes", image: np.ndarray, size: int) -> None:
    """One diverging-colour tile, centred at 0 and scaled to its own ``max |value|``; no ticks."""
    vmax = float(np.abs(image).max()) or 1.0
    ax.imshow(image.reshape(size, size), cmap=CMAP, vmin=-vmax, vmax=vmax)
    ax.set_xticks([])
    ax.set_yticks([])


def draw_gray(ax: "plt.Axes", image: np.ndarray, size: int) -> None:
    """One grayscale tile of pixels in [0, 1] (ink dark); no ticks."""
    ax.imshow(image.reshape(size, size), cmap="gray_r", vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])


def rgb_pattern(image: np.ndarray, size: int) -> np.ndarray:
    """Diverging-colormap RGB of one pattern, centred at 0 and scaled to its own ``max |value|``."""
    vmax = float(np.abs(image).max()) or 1.0
    return plt.get_cmap(CMAP)(0.5 + 0.5 * image.reshape(size, size) / vmax)[..., :3]


def _rgb_gray(image: np.ndarray, size: int) -> np.ndarray:
    return np.repeat(1.0 - np.clip(image.reshape(size, size, 1), 0, 1), 3, axis=2)


def eigenvector_figure(values: Tensor, pixels: Tensor, top_inputs: Tensor, images: Tensor,
                       class_names: Sequence[str], path: PathLike, size: int = 28, n_inputs: int = 3,
                       labels: Optional[Tensor] = None, ranks: Optional[Tensor] = None) -> Path:
    """Per class (rows): the most positive and most negative eigenvector as pixel patterns, each
    followed by the test inputs with the largest activation ``|lambda (v . x)^2|`` (paper Fig. 2).

    ``values [C, 2]`` and ``pixels [C, 2, 784]``: (most positive, most negative) eigenpair per class,
    chosen by the signed eigenvalue, never by hand; ``top_inputs [C, 2, n]`` indices into
    ``images [N, 784]``. With ``labels [N]`` each input shows its true class (red: another class), so
    an eigenvector whose top inputs are other classes is visible as such; with ``ranks [C, 2]`` each
    eigenvalue shows its rank by ``|lambda|``. Drawn as one mosaic image (fast even on a loaded machine).
    """
    C = len(class_names)
    pad, gap, row_h = 3, 14, 9 + (7 if labels is not None else 0)
    cell = size + pad
    block = (1 + n_inputs) * cell
    width, height = 2 * block + gap, C * (cell + row_h)
    canvas = np.ones((height, width, 3))
    pix, imgs = pixels.detach().cpu().numpy(), images.detach().cpu().numpy()
    texts = []  # (x, y, text, colour, va)
    for c in range(C):
        y = c * (cell + row_h) + 9
        for s in range(2):
            x0 = s * (block + gap)
            canvas[y:y + size, x0:x0 + size] = rgb_pattern(pix[c, s], size)
            rank = f" #{int(ranks[c, s]) + 1}" if ranks is not None else ""
            texts.append((x0 + size / 2, y - 1, f"λ={float(values[c, s]):+.2f}{rank}", "k", "bottom"))
            for j in range(n_inputs):
                x = x0 + (1 + j) * cell
                idx = int(top_inputs[c, s, j])
                canvas[y:y + size, x:x + size] = _rgb_gray(imgs[idx], size)
                if labels is not None:
                    lab = int(labels[idx])
                    texts.append((x + size / 2, y + size + 0.5, class_names[lab].split("/")[0][:10],
                                  "k" if lab == c else "tab:red", "top"))
    fig = plt.figure(figsize=(width / 36 + 0.9, height / 36))
    ax = fig.add_axes([0.12, 0.0, 0.78, 0.94])
    ax.imshow(canvas, interpolation="nearest")
    ax.axis("off")
    for x, y, text, colour, va in texts:
        ax.text(x, y, text, ha="center", va=va, fontsize=6 if va == "top" else 6.5, color=colour)
    for c in range(C):
        ax.text(-4, c * (cell + row_h) + 9 + size / 2, class_names[c], ha="right", va="center", fontsize=8)
    for s, name in enumerate(("largest λ (most positive)", "smallest λ (most negative)")):
        ax.text(s * (block + gap) + block / 2, -8, f"{name}  |  top test inputs", ha="center", va="bottom",
                fontsize=7.5)
    if labels is not None:
        ax.text(width / 2, height + 2, "under each input: its true class (red: another class than the row)",
                ha="center", va="top", fontsize=6.5)
    per_tile_colorbar(fig, fig.add_axes([0.92, 0.3, 0.015, 0.4]), "eigenvector: value / max |value| of its tile")
    return save_figure(fig, path, dpi=110)


def spectra_figure(values: Tensor, class_names: Sequence[str], path: PathLike, n_show: int = 40) -> Path:
    """Left: the top-``n_show`` eigenvalues of every class by ``|lambda|`` as a heat map (rows =
    classes, red positive, blue negative). Right: ``|lambda|`` against rank (log scale), per class."""
    vals = values.detach().cpu().numpy()
    C = len(class_names)
    n = min(n_show, vals.shape[1])
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 0.28 * C + 1.6), gridspec_kw={"width_ratios": [1.6, 1]})
    vmax = float(np.abs(vals[:, :n]).max()) or 1.0
    im = a1.imshow(vals[:, :n], cmap=CMAP, vmin=-vmax, vmax=vmax, aspect="auto", interpolation="nearest")
    a1.set_yticks(np.arange(C))
    a1.set_yticklabels(class_names, fontsize=7)
    a1.set_ylabel("class (its interaction matrix Q(u_c))", fontsize=8)
    a1.set_xlabel("eigenvector rank (by |λ|)", fontsize=8)
    a1.set_title(f"top {n} eigenvalues per class (of {vals.shape[1]})", fontsize=8)
    bar = fig.colorbar(im, ax=a1, fraction=0.04, pad=0.02)
    bar.ax.tick_params(labelsize=7)
    bar.set_label("λ", fontsize=8)
    ranks = np.arange(1, vals.shape[1] + 1)
    cmap = plt.get_cmap("tab10")
    for c in range(C):
        a2.semilogy(ranks, np.abs(vals[c]), color=cmap(c % 10), lw=1, label=class_names[c])
    shown = min(vals.shape[1], 4 * n)
    a2.set_xlim(1, shown)
    lo, hi = float(np.abs(vals[:, :shown]).min()), float(np.abs(vals).max())
    if lo > 0 and hi > 0:
        a2.set_ylim(lo / 1.5, hi * 1.5)
    a2.set_xlabel("rank", fontsize=8)
    a2.set_ylabel("|λ|", fontsize=8)
    a2.set_title("|λ| by rank", fontsize=8)
    a2.legend(fontsize=6, ncol=2, frameon=False)
    a2.grid(alpha=0.3)
    for ax in (a1, a2):
        ax.tick_params(labelsize=7)
    fig.suptitle("Eigenvalue spectra of the class interaction matrices", fontsize=9)
    fig.subplots_adjust(left=0.1, right=0.98, bottom=0.18, top=0.85, wspace=0.25)
    return save_figure(fig, path)


def draw_truncation(curve: Dict[str, List[float]], full_accuracy: float, title: str = "") -> "plt.Figure":
    """The truncation figure (not saved): accuracy and error (log scale, 1-2-5 ticks) against the
    number ``k`` of eigenvectors kept per class; every point, k = 0 included, lies inside the axes."""
    k = np.asarray(curve["k"])
    acc = 100 * np.asarray(curve["accuracy"])
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(8, 3))
    a1.plot(k, acc, "o-", ms=3)
    a1.axhline(100 * full_accuracy, color="k", ls="--", lw=0.8, label=f"full model {100 * full_accuracy:.2f}%")
    lowest = min(float(acc.min()), 100 * full_accuracy)
    a1.set_ylim(max(0.0, lowest - 0.05 * (100 - lowest) - 1), 100.5)
    if 0 in k:
        a1.annotate(f"k=0: {acc[list(k).index(0)]:.1f}%", (0, acc[list(k).index(0)]), xytext=(6, 0),
                    textcoords="offset points", fontsize=7, va="center")
    a1.set_xlabel("eigenvectors kept per class (top k by |λ|)")
    a1.set_ylabel("test accuracy (%)")
    a1.legend(fontsize=8, loc="lower right")
    err = np.maximum(100 - acc, 1e-2)
    a2.semilogy(k, err, "o-", ms=3)
    a2.axhline(100 - 100 * full_accuracy, color="k", ls="--", lw=0.8)
    log_percent_axis(a2)
    a2.set_xlabel("eigenvectors kept per class")
    a2.set_ylabel("test error (%, log scale)")
    for ax in (a1, a2):
        ax.grid(alpha=0.3, which="major")
    fig.suptitle(title or "Truncation: classifying with the top-k eigenvectors of each class", fontsize=9)
    fig.tight_layout()
    return fig


def truncation_figure(curve: Dict[str, List[float]], full_accuracy: float, path: PathLike,
                      title: str = "") -> Path:
    """:func:`draw_truncation`, saved to ``path``."""
    return save_figure(draw_truncation(curve, full_accuracy, title), path)


def hosvd_figure(h: HOSVD, values: Tensor, pixels: Tensor, class_names: Sequence[str], path: PathLike,
                 size: int = 28) -> Path:
    """Top HOSVD components (rows): how each class's logit uses it (``sigma_s a_s[c]``), and the
    component's most positive and most negative eigenvector (``values [r, 2]``) as pixel patterns
    (``pixels [r, 2, 784]``), for the first ``r = len(values)`` components."""
    r = min(len(values), h.r)
    fig, axes = plt.subplots(r, 3, figsize=(8, 1.8 * r), gridspec_kw={"width_ratios": [3, 1, 1]})
    axes = np.atleast_2d(axes)
    coef = (h.coefficients * h.singular_values).detach().cpu().numpy()  # [n, r]
    vals = values.detach().cpu().numpy()
    pix = pixels.detach().cpu().numpy()
    for s in range(r):
        ax = axes[s, 0]
        ax.bar(np.arange(len(class_names)), coef[:, s], color=np.where(coef[:, s] >= 0, "tab:red", "tab:blue"))
        ax.axhline(0, color="k", lw=0.5)
        ax.set_xticks(np.arange(len(class_names)))
        ax.set_xticklabels(class_names if s == r - 1 else [], fontsize=7, rotation=30)
        ax.set_ylabel(f"σ{s + 1}={float(h.singular_values[s]):.2f}", fontsize=8)
        ax.tick_params(labelsize=7)
        for j, (i, name) in enumerate(((0, "top +"), (1, "top −"))):
            draw_pattern(axes[s, 1 + j], pix[s, i], size)
            axes[s, 1 + j].set_title(f"{name} λ={vals[s, i]:+.2f}", fontsize=7, pad=2)
    axes[0, 0].set_title("class coefficients σ_s a_s (logit use of the component)", fontsize=8)
    fig.suptitle("HOSVD of the class outputs: top singular components and their eigenvectors "
                 "(each picture scaled to its own max |value|)", fontsize=9)
    fig.subplots_adjust(left=0.08, right=0.9, bottom=0.12 / max(r / 4, 0.5), top=1 - 0.1 / max(r / 4, 0.5),
                        wspace=0.15, hspace=0.35)
    per_tile_colorbar(fig, fig.add_axes([0.92, 0.3, 0.012, 0.4]))
    return save_figure(fig, path)


def tree_figure(tree: EigenTree, pixel_fn, class_names: Sequence[str], path: PathLike, size: int = 28,
                classes: Optional[Sequence[int]] = None, n_roots: int = 2) -> Path:
    """Eigenvector tree of a two-layer classifier: for a few classes, the top last-layer eigenvectors
    (rows, with their eigenvalue) and, for each, the top layer-0 eigenvectors of ``Q_0(v)`` (pixels).

    ``pixel_fn(vectors [m, d]) -> [m, 784]`` maps layer-0 eigenvectors to pixels.
    """
    classes = list(classes if classes is not None else range(min(3, len(tree.roots) // max(tree.k, 1))))
    rows = []
    for c in classes:
        roots = [node for node in tree.roots if node.path[0] == c][:n_roots]
        rows.extend((c, node) for node in roots)
    k = tree.k
    height = 1.3 * len(rows) + 0.7
    fig, axes = plt.subplots(len(rows), k + 1, figsize=(1.25 * (k + 1) + 1.2, height),
                             gridspec_kw={"width_ratios": [1.3] + [1] * k})
    axes = np.atleast_2d(axes)
    for row, (c, node) in enumerate(rows):
        ax = axes[row, 0]
        ax.axis("off")
        ax.text(0.0, 0.5, f"class {class_names[c]}\nlayer-{node.layer} eig #{node.rank + 1}\nλ={node.value:+.2f}",
                fontsize=8, va="center")
        children = node.children[:k]
        pix = pixel_fn(torch.stack([ch.vector for ch in children])).detach().cpu().numpy() if children else []
        for j in range(k):
            if j < len(children):
                draw_pattern(axes[row, 1 + j], pix[j], size)
                axes[row, 1 + j].set_title(f"λ={children[j].value:+.2f}", fontsize=7, pad=2)
            else:
                axes[row, 1 + j].axis("off")
    shown = ", ".join(class_names[c] for c in classes)
    fig.suptitle(f"Eigenvector tree, classes {shown} (top {n_roots} each): each row names a last-layer "
                 f"eigenvector v\n(left, text); the pictures are the top {k} eigenvectors of layer 0 for the "
                 "output direction v, in pixels\n(each picture scaled to its own max |value|)", fontsize=8.5)
    fig.subplots_adjust(left=0.01, right=0.9, bottom=0.02, top=1 - 0.95 / height, wspace=0.1, hspace=0.4)
    per_tile_colorbar(fig, fig.add_axes([0.92, 0.3, 0.015, 0.4]))
    return save_figure(fig, path)


def training_figure(history: List[Dict[str, float]], path: PathLike) -> Path:
    """Training loss and test accuracy per epoch."""
    ep = [h["epoch"] for h in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(7, 2.6))
    a1.plot(ep, [h["train_loss"] for h in history], "o-", ms=3)
    a1.set_xlabel("epoch")
    a1.set_ylabel("train loss (with noise)")
    if "test_accuracy" in history[0]:
        a2.plot(ep, [100 * h["test_accuracy"] for h in history], "o-", ms=3)
    a2.set_xlabel("epoch")
    a2.set_ylabel("test accuracy (%)")
    for ax in (a1, a2):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)
