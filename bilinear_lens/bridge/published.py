"""The authors' published models (``tdooms/*``) on the TransformerBridge: ``boot_transformers(src)``.

``TransformerBridge.boot_transformers(src)`` reads ``src``'s Hugging Face config first
(``AutoConfig.from_pretrained``), and only then picks an architecture adapter (the registry and
the ``transformer_lens.architectures`` entry points). The authors' format has no Hugging Face
config (``"architectures": ["Transformer"]``, no ``model_type``), so no adapter is ever consulted
for it: TransformerLens has no extension point early enough. The plugin therefore wraps
``boot_transformers`` (one row of :data:`bilinear_lens.registration.PATCHES`): when ``src`` is

* a local folder in the authors' format (recognised by its contents, never its name), or
* a Hub repo id whose ``config.json`` is that format (fetched as for
  ``HookedTransformer.from_pretrained``: only ``config.json`` before the format is known),

it builds the exact ``LlamaForCausalLM`` of the same computation in memory
(:func:`~bilinear_lens.checkpoints.authors.authors_hf_model`: ``qkv`` split in thirds, ``w`` in
gate/up halves, the branch scale ``s`` folded into ``o_proj``, norms of ones with eps ``1e-8``;
``[vocab, d_model]`` embeddings, ``[d_model, d_model]`` projections, ``[d_hidden, d_model]`` MLP
halves) and the prepared tokenizer, and hands both to the stock ``boot_transformers`` through its
public ``hf_model=`` and ``tokenizer=`` arguments. Nothing is written to disk. The bilinear Llama
adapter then gives :class:`~bilinear_lens.bridge.BilinearMLPBridge` blocks (GLU-gated variants:
TransformerLens' ``GatedMLPBridge``). Any other ``src`` goes to TransformerLens unchanged.

``scale_attn=True/False`` overrides the config's key (absent = true), as for ``from_pretrained``;
the choice is recorded as ``bridge.published`` (:func:`bilinear_lens.published_info`).
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from bilinear_lens.checkpoints.hf_config import CheckpointError

NOT_FOR_AUTHORS = ("revision", "checkpoint_index", "checkpoint_value", "device_map", "n_devices", "max_memory",
                   "model_class")
"""``boot_transformers`` arguments that have no meaning for an in-memory authors' model: refused."""


def authors_source(model_name: Any) -> Optional[Path]:
    """The local folder of the authors'-format model ``model_name`` names, or None for any other name.

    A local folder counts by its contents. A Hub repo id counts when its ``config.json`` (from the
    Hub or the cache) is the authors' format; when that cannot be read, or is another format, the
    name is left to TransformerLens (which reports its own error).
    """
    from bilinear_lens.checkpoints import published
    from bilinear_lens.checkpoints.authors import is_authors_config, is_authors_folder

    if not isinstance(model_name, (str, Path)):
        return None
    path = Path(str(model_name)).expanduser()
    if path.is_dir():
        return path if is_authors_folder(path) else None
    if not published.looks_like_repo_id(str(model_name)):
        return None
    try:
        config = published.hub_config(str(model_name))
    except CheckpointError:  # offline and not cached, no such repo: TransformerLens' own error
        return None
    if not is_authors_config(config):
        return None
    return published.fetch_authors_repo(str(model_name))


def _tokenizer(path: Path, key: Optional[str]) -> Any:
    from bilinear_lens.checkpoints.authors_tokenizer import load_tokenizer, locate_tokenizer_folder

    folder, why = locate_tokenizer_folder(path, key)
    if folder is None:
        raise CheckpointError(f"{path}: the TransformerBridge needs a tokenizer, and {why}; pass "
                              "tokenizer=AutoTokenizer.from_pretrained(...) to boot_transformers, or put the "
                              "tokenizer files in the folder.")
    return load_tokenizer(folder, key)


def boot_published(boot: Callable[..., Any], path: Path, args: Dict[str, Any], scale_attn: Optional[bool]) -> Any:
    """``boot(**args)`` for the authors' model in ``path``, with ``hf_model=`` and ``tokenizer=`` filled in."""
    import torch

    from bilinear_lens.checkpoints.authors import _remember, authors_hf_model, read_authors_config

    given = [name for name in NOT_FOR_AUTHORS if args.get(name) is not None]
    if given:
        raise CheckpointError(f"{path} is in the authors' published format, which boot_transformers loads in "
                              f"memory: {given[0]}= does not apply to it; drop it (use device= for placement).")
    acfg = read_authors_config(path, json.loads((path / "config.json").read_text()))  # refusals first
    tokenizer = args.get("tokenizer")
    if tokenizer is None:
        tokenizer = _tokenizer(path, acfg.tokenizer)
    ids = {k: getattr(tokenizer, k, None) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    hf = authors_hf_model(path, scale_attn=scale_attn, dtype=args.get("dtype") or torch.float32,
                          special_ids=ids, attn_implementation="eager")  # eager: what boot loads with
    device = args.get("device")
    if device is None:
        from transformer_lens.utilities import get_device

        device = get_device()
    bridge = boot(**{**args, "model_name": str(path), "hf_model": hf.to(device), "tokenizer": tokenizer,
                     "device": device})
    bridge.published = hf.published
    _remember(bridge.cfg, hf.published)
    return bridge


def wrap_boot_transformers(original: Any) -> Any:
    """``TransformerBridge.boot_transformers`` that boots the authors' format (module docstring) and
    accepts ``scale_attn=`` for it; every other call is the original's, unchanged.

    ``original`` is the class attribute: TransformerLens defines a classmethod and, once
    ``model_bridge.sources.transformers`` is imported, replaces it by ``staticmethod(boot)``; the
    wrapper keeps whichever kind it wraps.
    """
    is_class = isinstance(original, classmethod)
    func = original.__func__
    signature = inspect.signature(func)

    def call(lead: tuple, model_name: Any, args: tuple, kwargs: Dict[str, Any], scale_attn: Optional[bool]) -> Any:
        bound = dict(signature.bind(*lead, model_name, *args, **kwargs).arguments)
        if is_class:
            bound.pop(next(iter(signature.parameters)))  # cls
        path = authors_source(model_name) if bound.get("hf_model") is None else None
        if path is None:
            if scale_attn is not None:
                raise CheckpointError(f"scale_attn= applies to the authors' published format only; "
                                      f"{model_name} is not in it.")
            return func(*lead, model_name, *args, **kwargs)
        return boot_published(lambda **kw: func(*lead, **kw), path, bound, scale_attn)

    if is_class:
        def boot_transformers(cls, model_name, *args, scale_attn: Optional[bool] = None, **kwargs):
            return call((cls,), model_name, args, kwargs, scale_attn)
    else:
        def boot_transformers(model_name, *args, scale_attn: Optional[bool] = None, **kwargs):
            return call((), model_name, args, kwargs, scale_attn)

    boot_transformers.__doc__ = func.__doc__
    boot_transformers.__wrapped__ = func
    return classmethod(boot_transformers) if is_class else staticmethod(boot_transformers)


__all__ = ["authors_source", "boot_published", "wrap_boot_transformers"]
