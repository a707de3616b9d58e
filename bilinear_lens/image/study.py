"""The image study end to end: train a bilinear classifier, decompose it, draw it, write a report.

``run_study(StudyConfig(...))`` writes into ``out``:

* ``model/``: the classifier (``BilinearClassifier.load(out / "model")``);
* ``metrics.json``: ``test_accuracy``, ``truncation`` (``{"k": [0..30], "accuracy": [...]}``),
  ``dataset``, ``n_train``, ``n_test``, ``config``, timings, and ``unregularised`` when asked;
* ``figures/*.png`` and ``index.html``.

``out`` is a run folder (:func:`bilinear_lens.runs.open_run`, kind ``"mnist"``): a new or empty folder,
or an earlier mnist run. Its identity is the resolved settings (:meth:`StudyConfig.identity`); a
finished run with the same settings is verified and its metrics returned when ``resume`` is set,
another run's folder is refused unless ``overwrite``, anything else is refused. Every setting and
the data are checked before the folder is created. Training checkpoints after every epoch into
``out/checkpoint/state.safetensors`` + ``.json`` (no Python objects); ``resume`` continues bit-identically.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from bilinear_lens.checkpoints.target import read_marker
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
from bilinear_lens.image.defaults import DATASET_DEFAULTS
from bilinear_lens.image.model import BilinearClassifier, ClassifierConfig, eigenvector_pixels
from bilinear_lens.image.report import write_index
from bilinear_lens.image.train import TrainConfig, accuracy, train
from bilinear_lens.runs import RunError, RunFolder, check_float, check_int, open_run

OWNED = ("model", "checkpoint", "unregularised", "figures", "metrics.json", "index.html")
"""The entries of a run folder that ``mnist`` writes (what ``overwrite`` replaces)."""
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
    threads: Optional[int] = 1  # torch threads (1 is fastest on a shared, loaded machine; 0/None: torch's)
    progress: bool = True
    resume: bool = False  # continue (or return, when finished) the run already in ``out``
    overwrite: bool = False  # replace another mnist run in ``out``

    def resolved(self) -> "StudyConfig":
        """The dataset's defaults filled in, every setting checked (one-line errors naming the option)."""
        if self.dataset not in DATASET_DEFAULTS:
            raise RunError(f"--dataset must be one of {sorted(DATASET_DEFAULTS)}, got {self.dataset!r}.")
        filled = {k: v for k, v in DATASET_DEFAULTS[self.dataset].items() if getattr(self, k) is None}
        cfg = replace(self, **filled)
        for opt, name in (("--epochs", "epochs"), ("--d-hidden", "d_hidden"), ("--layers", "n_layers"),
                          ("--batch-size", "batch_size"), ("--n-train", "n_train"), ("--n-test", "n_test")):
            check_int(opt, getattr(cfg, name), minimum=1)
        check_int("--threads", cfg.threads, minimum=0)
        check_int("--seed", cfg.seed, minimum=0, allow_none=False)
        check_float("--lr", cfg.lr, minimum=0, inclusive=(False, True))
        for opt, name in (("--weight-decay", "weight_decay"), ("--input-noise", "input_noise"),
                          ("--latent-noise", "latent_noise")):
            check_float(opt, getattr(cfg, name), minimum=0)
        return cfg

    def identity(self) -> Dict[str, Any]:
        """The settings that define the result (not ``out``, threads, progress, resume, overwrite)."""
        skip = {"out", "threads", "progress", "resume", "overwrite"}
        ident = {k: v for k, v in asdict(self).items() if k not in skip}
        if self.data is not None and Path(str(self.data)).expanduser().exists():
            ident["data"] = str(Path(str(self.data)).expanduser().resolve())
        return ident

    def model_config(self, image_size: int = 28, n_classes: int = 10, regularised: bool = True) -> ClassifierConfig:
        return ClassifierConfig(d_hidden=self.d_hidden, n_layers=self.n_layers, n_classes=n_classes,
                                image_size=image_size, residual=self.residual,
                                input_noise=self.input_noise if regularised else 0.0,
                                latent_noise=self.latent_noise if regularised else 0.0)

    def train_config(self, regularised: bool = True) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                           weight_decay=self.weight_decay if regularised else 0.0, seed=self.seed)


def fit_in_run(run: RunFolder, prefix: str, mcfg: ClassifierConfig, tcfg: TrainConfig, data: ImageSplit,
               source: Dict[str, Any], progress: bool = True) -> Dict[str, Any]:
    """Train a classifier into ``run`` (``<prefix>model/``; ``<prefix>checkpoint/state`` while training),
    or, when resuming, reload the finished ``model/`` or continue from the checkpoint.
    Returns ``{"model", "history", "train_seconds", "reused"}``."""
    model_dir, ckpt = run.file(prefix + "model"), run.file(prefix + "checkpoint/state")
    if run.resuming and read_marker(model_dir) is not None:  # written atomically once training had finished
        meta = BilinearClassifier.read_metadata(model_dir)
        return {"model": BilinearClassifier.load(model_dir), "history": meta.get("history", []),
                "train_seconds": meta.get("train_seconds"), "reused": True}
    torch.manual_seed(tcfg.seed)
    model = BilinearClassifier(mcfg)
    result = train(model, data.train, tcfg, data.test, checkpoint=ckpt, progress=progress,
                   on_checkpoint=run.checkpointed)
    settings = {"model_config": asdict(mcfg), "train_config": asdict(tcfg), "data": source}
    model.save(model_dir, extra={"settings": settings, "history": result.history,
                                 "train_seconds": result.seconds}, overwrite=True)
    run.checkpointed()
    shutil.rmtree(run.file(prefix + "checkpoint"), ignore_errors=True)
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
    for opt, n, part in (("--n-train", n_train, split.train), ("--n-test", n_test, split.test)):
        if n is not None and n > len(part):
            raise RunError(f"{opt} must be in [1, {len(part)}] (the size of this split of {split.source}), got {n}.")
    train_data = split.train.subset(n_train) if n_train else split.train
    test_data = split.test.subset(n_test) if n_test else split.test
    return replace(split, train=train_data, test=test_data)


def _finished_metrics(run: RunFolder) -> Dict[str, Any]:
    return json.loads(run.file("metrics.json").read_text(encoding="utf-8"))


def run_study(cfg: StudyConfig) -> Dict[str, Any]:
    """Train, decompose, draw and report into the run folder ``cfg.out`` (module docstring).
    Returns the metrics written (or, for a finished run with ``resume``, the ones recorded)."""
    cfg = cfg.resolved()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t_start = time.perf_counter()
    split = _subset(load_data(cfg.data, cfg.dataset), cfg.n_train, cfg.n_test)  # before any folder exists
    with open_run(cfg.out, "mnist", cfg.identity(), resume=cfg.resume, overwrite=cfg.overwrite, owned=OWNED,
                  inputs=[cfg.data]) as run:
        if run.finished:
            return _finished_metrics(run)
        metrics = _study(run, cfg, split, t_start)
        run.finish()
    return metrics


def _study(run: RunFolder, cfg: StudyConfig, split: ImageSplit, t_start: float) -> Dict[str, Any]:
    out = run.path
    source = {"dataset": cfg.dataset, "source": split.source, "n_train": len(split.train), "n_test": len(split.test)}
    n_classes = len(split.class_names)
    mcfg, tcfg = cfg.model_config(split.image_size, n_classes), cfg.train_config()
    fit = fit_in_run(run, "", mcfg, tcfg, split, source, cfg.progress)
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
        "eigenvalues_top": {name: [round(float(v), 5) for v in dec.eig.values[c, :10]]
                            for c, name in enumerate(split.class_names)},
        "hosvd_singular_values": [float(s) for s in dec.hosvd.singular_values],
    }
    if cfg.unregularised:
        ucfg, utcfg = cfg.model_config(split.image_size, n_classes, False), cfg.train_config(False)
        ufit = fit_in_run(run, "unregularised/", ucfg, utcfg, split, source, cfg.progress)
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
    run.write_json("metrics.json", metrics)
    write_index(out, metrics)
    return metrics
