"""Bilinear (or SwiGLU) TinyStories language models: tokenizer, data, model shapes, training.

* :mod:`~bilinear_lens.language.tokenizer`: byte-level BPE tokenizers (``train_tokenizer``);
* :mod:`~bilinear_lens.language.data`: stories -> token stream -> blocks (safetensors cache);
* :mod:`~bilinear_lens.language.model`: ``LMShape`` -> ``HookedTransformerConfig``;
* :mod:`~bilinear_lens.language.train`: ``train_lm(LMTrainConfig(...))``, resumable bit for bit;
* :mod:`~bilinear_lens.language.checkpoint`: the run folder's checkpoints (no Python objects);
* :mod:`~bilinear_lens.language.cli`: ``bilinear-lens train-lm``.
"""

__all__: list = []  # the submodules are imported by name (they load torch)
