"""Text for the language-model applications: sources -> documents -> token streams -> blocks -> batches.

* :mod:`~bilinear_lens.text.sources`: a text file or a Hugging Face dataset -> documents (one loader,
  one set of errors);
* :mod:`~bilinear_lens.text.tokens`: documents -> ``[BOS] d_1 [BOS] d_2 ...`` (cached) -> blocks;
* :mod:`~bilinear_lens.text.batches`: blocks in a step-determined order (:class:`TokenBlocks`),
  validation batches.
"""

from bilinear_lens._lazy import lazy_getattr

_LAZY = {
    "SEPARATOR": "bilinear_lens.text.sources", "check_source": "bilinear_lens.text.sources",
    "is_hub_name": "bilinear_lens.text.sources", "load_hub_dataset": "bilinear_lens.text.sources",
    "read_texts": "bilinear_lens.text.sources", "split_stories": "bilinear_lens.text.sources",
    "blocks_of": "bilinear_lens.text.tokens", "encode": "bilinear_lens.text.tokens",
    "load_tokens": "bilinear_lens.text.tokens", "text_blocks": "bilinear_lens.text.tokens",
    "tokenize_stories": "bilinear_lens.text.tokens",
    "Batch": "bilinear_lens.text.batches", "TokenBlocks": "bilinear_lens.text.batches",
    "block_batches": "bilinear_lens.text.batches", "order_indices": "bilinear_lens.text.batches",
    "padded_batches": "bilinear_lens.text.batches",
}
__getattr__ = lazy_getattr(__name__, _LAZY, globals())
__all__ = sorted(_LAZY)
