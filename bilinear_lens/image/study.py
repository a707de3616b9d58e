"""The image study end to end: train a bilinear classifier, decompose it, draw it, write a report.

``run_study(StudyConfig(...))`` writes into ``out``:

* ``model/``: the classifier (``BilinearClassifier.load(out / "model")``);
* ``metrics.json``: ``test_accuracy``, ``truncation`` (``{"k": [0..30], "accuracy": [...]}``),
  ``dataset``, ``n_train``, ``n_test``, ``config``, timings, and ``unregularised`` when asked;
* ``figures/*.png`` and ``index.html``.

Training resumes from ``out/checkpoint.pt`` after an interruption, and a finished ``model/`` with the
same settings is reused instead of retrained.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from bilinear_lens.image import figures
from bilinear_lens.image.analysis import (
    ClassDecomposition,
    decompose_classifier,
    pick,
    signed_extremes,
    to_pixels,
    top_activating,
    truncation_curve,
)
from bilinear_lens.image.data import ImageSplit, load_data
from bilinear_lens.image.model import BilinearClassifier, ClassifierConfig, eigenvector_pixels
from bilinear_lens.image.report import write_index
from bilinear_lens.image.train import TrainConfig, accuracy, train
from bilinear_lens.runs import write_json

DATASET_DEFAULTS: Dict[str, Dict[str, Any]] = {
    # 10k real digits (8k/2k): small data, so light regularisation and a short run (< 2 min on 2 cores).
    "mnist": dict(d_hidden=256, epochs=10, batch_size=100, lr=3e-3, input_noise=0.2, latent_noise=0.0,
                  weight_decay=0.1),
    # The paper's Fashion-MNIST settings (notes §1.3): d 512, input noise 0.4, weight decay 0.5, batch 2048
    # (P2); batch 2048 also gives more seed-consistent eigenvectors than 256 (docs/image.md).
    "fashion-mnist": dict(d_hidden=512, epochs=20, batch_size=2048, lr=1e-3, input_noise=0.4, latent_noise=0.0,
                          weight_decay=0.5),
}
TRUNCATION_KS = tuple(range(31))


@dataclass
class StudyConfig:
    """Settings of one study; ``None`` fields take the dataset's defaults (``DATASET_DEFAULTS``)."""

    out: str = "mnist-study"
    dataset: str = "mnist"
    data: Optional[str] = None
    epochs: Optional[int] = None
    d_hidden: Optional[int] = None
    n_layers: int = 1
    residual: bool = False
    batch_size: Optional[int] = None
    lr: Optional[float] = None
    weight_decay: Optional[float] = None
    input_noise: Optional[float] = None
    latent_noise: Optional[float] = None
    seed: int = 0
    n_train: Optional[int] = None  # use only the first n training images (quick runs, tests)
    n_test: Optional[int] = None
    unregularised: bool = False  # also train the same model without noise and weight decay
    threads: Optional[int] = 1  # torch threads (1 is fastest on a shared, loaded machine)
    progress: bool = True

    def resolved(self) -> "StudyConfig":
        if self.dataset not in DATASET_DEFAULTS:
            raise ValueError(f"unknown dataset {self.dataset!r}; choose one of {sorted(DATASET_DEFAULTS)}.")
        filled = {k: v for k, v in DATASET_DEFAULTS[self.dataset].items() if getattr(self, k) is None}
        if self.n_layers < 1:
            raise ValueError(f"--layers must be >= 1, got {self.n_layers}.")
        return replace(self, **filled)

    def model_config(self, image_size: int = 28, n_classes: int = 10, regularised: bool = True) -> ClassifierConfig:
        return ClassifierConfig(d_hidden=self.d_hidden, n_layers=self.n_layers, n_classes=n_classes,
                                image_size=image_size, residual=self.residual,
                                input_noise=self.input_noise if regularised else 0.0,
                                latent_noise=self.latent_noise if regularised else 0.0)

    def train_config(self, regularised: bool = True) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                           weight_decay=self.weight_decay if regularised else 0.0, seed=self.seed)


def fit_or_load(folder: Path, mcfg: ClassifierConfig, tcfg: TrainConfig, data: ImageSplit, source: Dict[str, Any],
                progress: bool = True) -> Dict[str, Any]:
    """Train a classifier into ``folder`` (``model/`` + ``checkpoint.pt`` while training), or reuse a
    finished one written with identical settings. Returns ``{"model", "history", "train_seconds", "reused"}``."""
    model_dir, ckpt = folder / "model", folder / "checkpoint.pt"
    settings = {"model_config": asdict(mcfg), "train_config": asdict(tcfg), "data": source}
    if model_dir.is_dir():
        meta = BilinearClassifier.read_metadata(model_dir)
        if meta.get("settings") == settings:
            return {"model": BilinearClassifier.load(model_dir), "history": meta.get("history", []),
                    "train_seconds": meta.get("train_seconds"), "reused": True}
    torch.manual_seed(tcfg.seed)
    model = BilinearClassifier(mcfg)
    result = train(model, data.train, tcfg, data.test, checkpoint=ckpt, progress=progress)
    model.save(model_dir, extra={"settings": settings, "history": result.history,
                                 "train_seconds": result.seconds})
    ckpt.unlink(missing_ok=True)
    return {"model": model, "history": result.history, "train_seconds": result.seconds, "reused": False}


def _figures(model: BilinearClassifier, dec: ClassDecomposition, split: ImageSplit, curve: Dict[str, Any],
             test_acc: float, history: list, fig_dir: Path) -> Dict[str, str]:
    size = split.image_size
    names = split.class_names
    eig = dec.eig
    top_inputs = top_activating(model, eig, split.test.images, dec.signed)  # [C, 2, n]
    out = {}
    out["eigenvectors"] = figures.eigenvector_figure(pick(eig, dec.signed).values, dec.pixels, top_inputs,
                                                     split.test.images, names, fig_dir / "eigenvectors.png", size,
                                                     labels=split.test.labels, ranks=dec.signed)
    out["spectra"] = figures.spectra_figure(eig.values, names, fig_dir / "spectra.png")
    out["truncation"] = figures.truncation_figure(curve, test_acc, fig_dir / "truncation.png")
    h = dec.hosvd
    n_comp = min(4, h.r)
    heig = h.eigen.select(slice(0, n_comp)).to(dtype=torch.float32)
    hsel = pick(heig, signed_extremes(heig.values))
    hpix = to_pixels(model, hsel)
    out["hosvd"] = figures.hosvd_figure(h, hsel.values, hpix, names, fig_dir / "hosvd.png", size)
    if dec.tree is not None:
        def layer0_pixels(v: torch.Tensor) -> torch.Tensor:
            return eigenvector_pixels(model, v)

        if model.cfg.n_layers == 2:
            out["tree"] = figures.tree_figure(dec.tree, layer0_pixels, names, fig_dir / "tree.png", size)
    if history:
        out["training"] = figures.training_figure(history, fig_dir / "training.png")
    return {k: str(Path(v).relative_to(fig_dir.parent)) for k, v in out.items()}


def _subset(split: ImageSplit, n_train: Optional[int], n_test: Optional[int]) -> ImageSplit:
    train_data = split.train.subset(n_train) if n_train else split.train
    test_data = split.test.subset(n_test) if n_test else split.test
    return replace(split, train=train_data, test=test_data)


def run_study(cfg: StudyConfig) -> Dict[str, Any]:
    """Train, decompose, draw and report (module docstring). Returns the metrics written."""
    cfg = cfg.resolved()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t_start = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    split = _subset(load_data(cfg.data, cfg.dataset), cfg.n_train, cfg.n_test)
    source = {"dataset": cfg.dataset, "source": split.source, "n_train": len(split.train), "n_test": len(split.test)}
    n_classes = len(split.class_names)
    mcfg, tcfg = cfg.model_config(split.image_size, n_classes), cfg.train_config()
    fit = fit_or_load(out, mcfg, tcfg, split, source, cfg.progress)
    model: BilinearClassifier = fit["model"].eval()
    test_acc = accuracy(model, split.test)

    dec = decompose_classifier(model)
    t0 = time.perf_counter()
    curve = truncation_curve(model, dec.eig, split.test, TRUNCATION_KS)
    t_trunc = time.perf_counter() - t0
    top20 = curve["accuracy"][curve["k"].index(20)] if 20 in curve["k"] else None
    metrics: Dict[str, Any] = {
        "dataset": cfg.dataset,
        "source": split.source,
        "n_train": len(split.train),
        "n_test": len(split.test),
        "test_accuracy": test_acc,
        "train_accuracy": accuracy(model, split.train),
        "truncation": curve,
        "truncation_drop_at_20": (test_acc - top20) if top20 is not None else None,
        "config": {"study": asdict(cfg), "model": asdict(mcfg), "train": asdict(tcfg)},
        "history": fit["history"],
        "seconds": {"train": fit["train_seconds"], "decomposition": dec.seconds, "truncation_curve": t_trunc},
        "model_reused": fit["reused"],
        "eigenvalues_top": {name: [round(float(v), 5) for v in dec.eig.values[c, :10]]
                            for c, name in enumerate(split.class_names)},
        "hosvd_singular_values": [float(s) for s in dec.hosvd.singular_values],
    }
    if cfg.unregularised:
        ucfg, utcfg = cfg.model_config(split.image_size, n_classes, False), cfg.train_config(False)
        ufit = fit_or_load(out / "unregularised", ucfg, utcfg, split, source, cfg.progress)
        umodel = ufit["model"].eval()
        udec = decompose_classifier(umodel)
        ucurve = truncation_curve(umodel, udec.eig, split.test, TRUNCATION_KS)
        uacc = accuracy(umodel, split.test)
        metrics["unregularised"] = {
            "test_accuracy": uacc, "train_accuracy": accuracy(umodel, split.train), "truncation": ucurve,
            "truncation_drop_at_20": uacc - ucurve["accuracy"][ucurve["k"].index(20)] if 20 in ucurve["k"] else None,
            "config": {"model": asdict(ucfg), "train": asdict(utcfg)}, "train_seconds": ufit["train_seconds"],
        }
    t0 = time.perf_counter()
    metrics["figures"] = _figures(model, dec, split, curve, test_acc, fit["history"], out / "figures")
    metrics["seconds"]["figures"] = time.perf_counter() - t0
    metrics["seconds"]["total"] = time.perf_counter() - t_start
    write_json(out / "metrics.json", metrics)
    write_index(out, metrics)
    return metrics
