"""Shared pieces of the image sweeps: the run folder, the trained members, the two measures.

A sweep trains several classifiers ("members") into ``OUT/runs/<name>/`` of one run folder
(:func:`bilinear_lens.runs.open_run`, kind ``mnist-sweep-<sweep>``). Each member is trained by
:func:`bilinear_lens.image.study.fit_in_run`, so a member whose ``model/`` was finished with the same
settings is reused, not retrained: an interrupted sweep continues with ``--resume``.

Measures (``C`` classes, eigenvalues ``lambda [C, d]`` of the class interaction matrices ``Q(u_c)``):

* effective rank per class ``r_c = (sum_i |lambda_ci|)^2 / sum_i lambda_ci^2`` (``1 <= r_c <= d``;
  ``r_c = m`` for ``m`` equal-magnitude eigenvalues and zeros elsewhere);
* best-match cosine ``s_cr = max_j |cos(a_cr, b_cj)|`` of each eigenvector picture ``a [C, R, P]``
  against all pictures ``b [C, M, P]`` of a reference model of the same class (pixel space, so
  models of different widths compare; signs of eigenvectors are arbitrary).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
from jaxtyping import Float
from torch import Tensor

from bilinear_lens.image.data import ImageSplit, load_data
from bilinear_lens.image.model import ClassifierConfig
from bilinear_lens.image.config import TrainConfig
from bilinear_lens.image.study import fit_in_run
from bilinear_lens.image.train import accuracy
from bilinear_lens.reports.page import esc, figure_html, table_html, write_page
from bilinear_lens.runs import RunFolder

MEMBERS = "runs"
"""Sub-folder of the sweep's run folder that holds one folder per trained member."""


@dataclass
class Recipe:
    """Training recipe shared by the members of a sweep (``ClassifierConfig`` + ``TrainConfig`` fields)."""

    epochs: int = 10
    batch_size: int = 100
    lr: float = 3e-3
    n_train: Optional[int] = None
    n_test: Optional[int] = None

    def configs(self, d_hidden: int, seed: int, input_noise: float = 0.0, latent_noise: float = 0.0,
                weight_decay: float = 0.0, residual: bool = False) -> Tuple[ClassifierConfig, TrainConfig]:
        mcfg = ClassifierConfig(d_hidden=d_hidden, residual=residual, input_noise=input_noise,
                                latent_noise=latent_noise)
        tcfg = TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, weight_decay=weight_decay,
                           seed=seed)
        return mcfg, tcfg


def load_split(data: Optional[str], recipe: Recipe) -> Tuple[ImageSplit, Dict[str, Any]]:
    """MNIST (``data`` or the packaged digits), cut to ``recipe.n_train / n_test``; and its description."""
    split = load_data(data, "mnist")
    if recipe.n_train:
        split.train = split.train.subset(recipe.n_train)
    if recipe.n_test:
        split.test = split.test.subset(recipe.n_test)
    source = {"dataset": "mnist", "source": split.source, "n_train": len(split.train), "n_test": len(split.test)}
    return split, source


def train_member(run: RunFolder, name: str, mcfg: ClassifierConfig, tcfg: TrainConfig, split: ImageSplit,
                 source: Dict[str, Any], progress: bool = True) -> Dict[str, Any]:
    """Train (or reuse) member ``name`` in ``run/runs/name``; returns ``fit_in_run``'s dict plus
    ``test_accuracy``. Marks the run as checkpointed, so an interrupted sweep keeps its members."""
    run.file(f"{MEMBERS}/{name}").mkdir(parents=True, exist_ok=True)
    fit = fit_in_run(run, f"{MEMBERS}/{name}/", mcfg, tcfg, split, source, progress=progress)
    fit["model"].eval()
    fit["test_accuracy"] = accuracy(fit["model"], split.test)
    return fit


def effective_rank(values: Float[Tensor, "... d"]) -> Float[Tensor, "..."]:
    """``(sum |lambda|)^2 / sum lambda^2`` over the last axis (float64)."""
    v = values.double()
    den = (v ** 2).sum(-1)
    if bool((den == 0).any()):
        raise ValueError("effective_rank: a spectrum is all zeros (an untrained or degenerate class matrix).")
    return v.abs().sum(-1) ** 2 / den


def best_match_cosine(a: Float[Tensor, "C R P"], b: Float[Tensor, "C M P"]) -> Float[Tensor, "C R"]:
    """``max_j |cos(a[c, r], b[c, j])|`` for every class ``c`` and row ``r`` (float64)."""
    an = torch.nn.functional.normalize(a.double(), dim=-1)
    bn = torch.nn.functional.normalize(b.double(), dim=-1)
    return torch.einsum("crp,cmp->crm", an, bn).abs().amax(-1)


def identity_of(name: str, recipe: Recipe, settings: Dict[str, Any], source_data: Optional[str]) -> Dict[str, Any]:
    """What defines a sweep's results (the run folder's identity)."""
    return {"sweep": name, "recipe": asdict(recipe), "settings": settings, "data": source_data or "packaged-mnist10k"}


def write_sweep_index(run: RunFolder, title: str, intro: str, table: Sequence[Sequence[str]],
                      figures: Sequence[Tuple[str, str, str]], notes: Sequence[str] = ()) -> Path:
    """``index.html``: an intro paragraph, one table (first row = header), figures ``(path, heading,
    caption)`` relative to the run folder, and notes; self-contained (the shared report shell)."""
    parts = [f"<p>{esc(intro)}</p>", table_html(table[1:], header=table[0]) if table else "",
             "<p>All numbers: <a href='metrics.json'>metrics.json</a>; trained members: "
             f"<code>{MEMBERS}/NAME/model</code> (<code>BilinearClassifier.load</code>).</p>"]
    parts += [f"<p>{esc(n)}</p>" for n in notes]
    parts += [figure_html(rel, head, text) for rel, head, text in figures]
    return write_page(run.file("index.html"), title, "\n".join(parts))
