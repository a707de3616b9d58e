"""One-call loading of local model folders and of the authors' published bilinear models."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Optional, Tuple, Union

from bilinear_lens.checkpoints.hf_config import CheckpointError, read_config
from bilinear_lens.registration import register

__all__ = ["load_model_and_tokenizer", "load_pretrained"]


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


def load_model_and_tokenizer(path: Union[str, Path], flag: str = "--model") -> Tuple[Any, Any]:
    """A HookedTransformer (``from_pretrained``, eval mode) from a model folder, and its tokenizer (``None``
    if the folder has none): what the commands that read a model (``train-sae``, ``compare``, ``atlas``) load."""
    from bilinear_lens.runs import RunError

    p = Path(path)
    if p.is_file():
        raise RunError(f"{flag} {p} is a file, not a model folder; pass the folder that holds config.json and "
                       "model.safetensors (e.g. OUT/model of train-lm).")
    if not p.is_dir():
        raise FileNotFoundError(f"model folder {p} does not exist (train one with bilinear-lens train-lm).")
    model = load_pretrained(str(p.resolve())).eval()
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None and ((p / "tokenizer.json").exists() or (p / "tokenizer_config.json").exists()):
        from bilinear_lens.language.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(p)
    return model, tokenizer
