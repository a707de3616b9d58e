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

import html
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
from jaxtyping import Float
from torch import Tensor

from bilinear_lens.image.data import ImageSplit, load_data
from bilinear_lens.image.model import ClassifierConfig
from bilinear_lens.image.report import CSS
from bilinear_lens.image.study import fit_in_run
from bilinear_lens.image.train import TrainConfig, accuracy
from bilinear_lens.runs import RunFolder, write_text

MEMBERS = "runs"
"""Sub-folder of the sweep's run folder that holds one folder per trained member."""


@dataclass
class SweepOptions:
    """How a sweep is run (not what it computes): output folder, data source, run-folder flags."""

    out: Optional[str] = None  # default: mnist-sweep-<name>
    data: Optional[str] = None  # default: the 10k MNIST digits shipped with the package
    quick: bool = False
    resume: bool = False
    overwrite: bool = False
    progress: bool = True
    threads: Optional[int] = 1


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
    caption)`` relative to the run folder, and notes; self-contained (inline CSS)."""
    esc = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>",
             f"<style>{CSS}</style></head><body><h1>{esc(title)}</h1><p>{esc(intro)}</p><table>"]
    if table:
        parts.append("<tr>" + "".join(f"<th>{esc(str(c))}</th>" for c in table[0]) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in row) + "</tr>" for row in table[1:]]
    parts.append("</table><p>All numbers: <a href='metrics.json'>metrics.json</a>; trained members: "
                 f"<code>{MEMBERS}/NAME/model</code> (<code>BilinearClassifier.load</code>).</p>")
    parts += [f"<p>{esc(n)}</p>" for n in notes]
    for rel, head, text in figures:
        parts.append(f"<figure><h2>{esc(head)}</h2><img src='{esc(rel)}' alt='{esc(head)}'>"
                     f"<figcaption>{esc(text)}</figcaption></figure>")
    parts.append("</body></html>\n")
    return write_text(run.file("index.html"), "\n".join(parts))
