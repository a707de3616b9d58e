"""Bilinear (or SwiGLU) TinyStories language models: tokenizer, model shapes, training.

* :mod:`~bilinear_lens.language.config`: ``LMShape``, ``LMTrainConfig`` (the ``train-lm`` flags);
* :mod:`~bilinear_lens.language.tokenizer`: byte-level BPE tokenizers (``train_tokenizer``);
* :mod:`~bilinear_lens.language.model`: ``LMShape`` -> ``HookedTransformerConfig`` -> a fresh model;
* :mod:`~bilinear_lens.language.train`: ``train_lm(LMTrainConfig(...))`` on the shared training loop
  (:mod:`bilinear_lens.training`), text from :mod:`bilinear_lens.text`;
* :mod:`~bilinear_lens.language.plots`: the validation-loss figure; :mod:`~bilinear_lens.language.cli`:
  ``bilinear-lens train-lm``.
"""

from bilinear_lens._lazy import lazy_getattr

_LAZY = {
    **{name: "bilinear_lens.language.config" for name in ("LMShape", "LMTrainConfig")},
    **{name: "bilinear_lens.language.tokenizer" for name in ("load_tokenizer", "save_tokenizer", "train_tokenizer")},
    **{name: "bilinear_lens.language.model" for name in ("build_model", "count_params", "hooked_config")},
    "train_lm": "bilinear_lens.language.train", "plot_val_loss": "bilinear_lens.language.plots",
}
__getattr__ = lazy_getattr(__name__, _LAZY, globals())
__all__ = sorted(_LAZY)
