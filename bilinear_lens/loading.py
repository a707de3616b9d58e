"""One-call loading of local model folders and of the authors' published bilinear models."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Optional, Union

from bilinear_lens.checkpoints.hf_config import CheckpointError, read_config
from bilinear_lens.registration import register


def load_pretrained(path: Union[str, Path], processing: bool = True, scale_attn: Optional[bool] = None,
                    **kwargs: Any) -> Any:
    """``HookedTransformer.from_pretrained(path, **kwargs)`` for a local folder, quietly.

    ``path``: a Hugging Face Llama folder, a folder in the authors' published format, or a Hub repo
    id of the latter (``tdooms/ts-medium``: fetched through the Hugging Face cache; offline, a
    one-line error when it is not cached). ``processing=False`` calls
    ``from_pretrained_no_processing`` (raw weights, no ``fold_ln``). ``scale_attn`` (authors'
    format only) overrides the config's ``scale_attn`` (absent = true): the attention branch
    scale ``1/sqrt(2 n_layer)`` is folded into ``W_O`` when true; the choice is in
    ``model.published``. Extra keyword arguments (``dtype``, ``n_ctx``, ``first_n_layers``,
    ``device``, ``fold_ln``, ``hf_model``, ``tokenizer``, ...) are passed through.
    """
    from bilinear_lens.registration import has_hooked_transformer, transformer_lens_version

    if not has_hooked_transformer():

        raise CheckpointError(
            f"load_pretrained builds a HookedTransformer, which TransformerLens {transformer_lens_version()} no "
            "longer has; use TransformerBridge.boot_transformers(path) (docs/bridge.md), or install "
            "transformer-lens 3.9."
        )
    from transformer_lens import HookedTransformer

    from bilinear_lens.checkpoints import published
    from bilinear_lens.checkpoints.authors import is_authors_folder, published_info

    register()
    if not Path(str(path)).expanduser().is_dir() and published.looks_like_repo_id(str(path)):
        path = published.resolve_model_source(path)
    read_config(path)  # clear error before TransformerLens gets involved
    authors = is_authors_folder(path)
    if scale_attn is not None:
        if not authors:
            raise CheckpointError(f"scale_attn= applies to the authors' published format only; {path} is not in it.")
        kwargs[published.OVERRIDE] = bool(scale_attn)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        if kwargs.get("tokenizer") is not None:  # given: no warning about a missing one
            warnings.filterwarnings("ignore", message=".*loaded without a tokenizer")
        load = HookedTransformer.from_pretrained if processing else HookedTransformer.from_pretrained_no_processing
        model = load(str(path), **kwargs)
    if authors:
        published_info(model)  # sets model.published
    return model
