"""One-call loading of local model folders."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Union

from bilinear_lens.checkpoints.hf_config import read_config
from bilinear_lens.registration import register


def load_pretrained(path: Union[str, Path], processing: bool = True, **kwargs: Any) -> Any:
    """``HookedTransformer.from_pretrained(path, **kwargs)`` for a local folder, quietly.

    ``processing=False`` calls ``from_pretrained_no_processing`` (raw weights, no ``fold_ln``).
    Extra keyword arguments (``dtype``, ``n_ctx``, ``first_n_layers``, ``device``, ``fold_ln``,
    ``hf_model``, ``tokenizer``, ...) are passed through.
    """
    from bilinear_lens.registration import has_hooked_transformer, transformer_lens_version

    if not has_hooked_transformer():
        from bilinear_lens.checkpoints.hf_config import CheckpointError

        raise CheckpointError(
            f"load_pretrained builds a HookedTransformer, which TransformerLens {transformer_lens_version()} no "
            "longer has; use TransformerBridge.boot_transformers(path) (docs/bridge.md), or install "
            "transformer-lens 3.9."
        )
    from transformer_lens import HookedTransformer

    register()
    read_config(path)  # clear error before TransformerLens gets involved
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        load = HookedTransformer.from_pretrained if processing else HookedTransformer.from_pretrained_no_processing
        return load(str(path), **kwargs)
