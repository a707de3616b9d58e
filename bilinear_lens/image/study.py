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
from dataclasses import replace
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
from bilinear_lens.image.config import StudyConfig, TrainConfig
from bilinear_lens.image.model import BilinearClassifier, ClassifierConfig, eigenvector_pixels
from bilinear_lens.image.report import write_index
from bilinear_lens.image.train import accuracy, train
from bilinear_lens.runs import RunError, RunFolder, open_run

OWNED = ("model", "checkpoint", "unregularised", "figures", "metrics.json", "index.html")
"""The entries of a run folder that ``mnist`` writes (what ``overwrite`` replaces)."""
TRUNCATION_KS = tuple(range(31))


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
    settings = {"model_config": mcfg.to_dict(), "train_config": tcfg.to_dict(), "data": source}
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
    with cfg.run.torch_threads():
        t_start = time.perf_counter()
        split = _subset(load_data(cfg.data, cfg.dataset), cfg.n_train, cfg.n_test)  # before any folder exists
        with open_run(cfg.run.out, "mnist", cfg.identity(), resume=cfg.run.resume, overwrite=cfg.run.overwrite,
                      owned=OWNED, inputs=[cfg.data]) as run:
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
    fit = fit_in_run(run, "", mcfg, tcfg, split, source, cfg.run.progress)
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
        "config": {"study": cfg.to_dict(), "model": mcfg.to_dict(), "train": tcfg.to_dict()},
        "history": fit["history"],
        "seconds": {"train": fit["train_seconds"], "decomposition": dec.seconds, "truncation_curve": t_trunc},
        "eigenvalues_top": {name: [round(float(v), 5) for v in dec.eig.values[c, :10]]
                            for c, name in enumerate(split.class_names)},
        "hosvd_singular_values": [float(s) for s in dec.hosvd.singular_values],
    }
    if cfg.unregularised:
        ucfg, utcfg = cfg.model_config(split.image_size, n_classes, False), cfg.train_config(False)
        ufit = fit_in_run(run, "unregularised/", ucfg, utcfg, split, source, cfg.run.progress)
        umodel = ufit["model"].eval()
        udec = decompose_classifier(umodel)
        ucurve = truncation_curve(umodel, udec.eig, split.test, TRUNCATION_KS)
        uacc = accuracy(umodel, split.test)
        metrics["unregularised"] = {
            "test_accuracy": uacc, "train_accuracy": accuracy(umodel, split.train), "truncation": ucurve,
            "truncation_drop_at_20": uacc - ucurve["accuracy"][ucurve["k"].index(20)] if 20 in ucurve["k"] else None,
            "config": {"model": ucfg.to_dict(), "train": utcfg.to_dict()}, "train_seconds": ufit["train_seconds"],
        }
    t0 = time.perf_counter()
    metrics["figures"] = _figures(model, dec, split, curve, test_acc, fit["history"], out / "figures")
    metrics["seconds"]["figures"] = time.perf_counter() - t0
    metrics["seconds"]["total"] = time.perf_counter() - t_start
    run.write_json("metrics.json", metrics)
    write_index(out, metrics)
    return metrics
