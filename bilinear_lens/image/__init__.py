"""The image study (the main job): bilinear MNIST / Fashion-MNIST classifiers decomposed from their weights.

* :mod:`~bilinear_lens.image.config`: ``StudyConfig`` (the ``mnist`` flags), ``TrainConfig``, ``SweepOptions``;
* :mod:`~bilinear_lens.image.model`: ``BilinearClassifier`` (embedding -> bilinear layers -> head);
* :mod:`~bilinear_lens.image.data`: the packaged digits, idx folders, ``.npz`` files, Hub datasets;
* :mod:`~bilinear_lens.image.train`: the classifier's training loop (shared schedule, optimiser, checkpoints);
* :mod:`~bilinear_lens.image.analysis` / :mod:`~bilinear_lens.image.figures` / :mod:`~bilinear_lens.image.report`:
  per-class decomposition, figures, ``index.html``;
* :mod:`~bilinear_lens.image.study`: ``run_study`` end to end; :mod:`~bilinear_lens.image.sweeps`: the paper's
  sweeps; :mod:`~bilinear_lens.image.cli`: ``bilinear-lens mnist``.
"""

from bilinear_lens._lazy import lazy_getattr

_LAZY = {
    **{name: "bilinear_lens.image.config" for name in ("StudyConfig", "SweepOptions", "TrainConfig")},
    **{name: "bilinear_lens.image.model" for name in ("BilinearClassifier", "ClassifierConfig")},
    **{name: "bilinear_lens.image.data" for name in ("ImageData", "ImageSplit", "load_data")},
    **{name: "bilinear_lens.image.train" for name in ("accuracy", "train")},
    "run_study": "bilinear_lens.image.study", "fit_in_run": "bilinear_lens.image.study",
    "run_sweep": "bilinear_lens.image.sweeps",
}
__getattr__ = lazy_getattr(__name__, _LAZY, globals())
__all__ = sorted(_LAZY)
