"""SAEs next to eigenvectors: SAELens SAEs on a bilinear layer's MLP input/output, and the comparison.

* :mod:`~bilinear_lens.sae.config`: ``SAETrainConfig``, ``CompareConfig`` and the two commands' settings;
* :mod:`~bilinear_lens.sae.train`: ``train_sae`` (our loop around SAELens' ``SAETrainer.step``, offline,
  bit-identical resume) on ``blocks.L.mlp.hook_in`` / ``blocks.L.hook_mlp_out``;
* :mod:`~bilinear_lens.sae.identity`: the model an SAE was trained on (recorded, checked by ``compare``);
* :mod:`~bilinear_lens.sae.evals`: SAELens' ``run_evals`` summarised to ``evals.json``;
* :mod:`~bilinear_lens.sae.compare`: the metrics (feature interaction matrices ``D_in Q D_in^T``,
  low-rank correlation, eigenvector/SAE matching, top contexts);
* :mod:`~bilinear_lens.sae.pipeline`: ``run_compare`` (``metrics.json`` + figures + ``index.html``);
* :mod:`~bilinear_lens.sae.published`: the authors' published SAEs (``load_sae``);
* :mod:`~bilinear_lens.sae.cli`: ``bilinear-lens train-sae`` and ``bilinear-lens compare``.
"""

from bilinear_lens._lazy import lazy_getattr

_LAZY = {
    **{name: "bilinear_lens.sae.config" for name in
       ("CompareConfig", "SAETrainConfig", "TrainSAECommand", "CompareCommand", "sae_hook_name")},
    "train_sae": "bilinear_lens.sae.train", "run_compare": "bilinear_lens.sae.pipeline",
    "load_sae": "bilinear_lens.sae.published",
}
__getattr__ = lazy_getattr(__name__, _LAZY, globals())
__all__ = sorted(_LAZY)
