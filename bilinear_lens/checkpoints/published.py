"""Loading the authors' published models into TransformerLens (the glue behind ``from_pretrained``).

``src`` is a local folder in the authors' format (:mod:`bilinear_lens.checkpoints.authors`) or a
Hub repo id of one (``tdooms/ts-medium``), fetched through the Hugging Face cache
(``snapshot_download``; offline, the cache only). :mod:`bilinear_lens.checkpoints.load` calls
:func:`tl_cfg_dict` and :func:`tl_state_dict` for such folders, so
``HookedTransformer.from_pretrained(src)``, ``from_pretrained_no_processing`` and
``HookedSAETransformer.from_pretrained`` all load them; ``scale_attn=True/False`` passed to any of
them overrides the config's key (absent = true). The choice is recorded on the model:
``bilinear_lens.published_info(model)`` (also ``model.published`` once looked up).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from bilinear_lens.checkpoints.authors import (
    _remember,
    attention_scale,
    authors_hf_model,
    hf_llama_config,
    is_authors_config,
    is_authors_folder,
    read_authors_config,
)
from bilinear_lens.checkpoints.authors_tokenizer import resolve_tokenizer_folder
from bilinear_lens.checkpoints.hf_config import CheckpointError, llama_cfg_dict

HUB_MODEL_FILES = ["config.json", "model.safetensors", "*.json", "*.model", "*.txt"]
OVERRIDE = "scale_attn"


def looks_like_repo_id(name: Any) -> bool:
    """``owner/name`` that is not a local path (a model repo id; SAEs add a subfolder separately)."""
    return (isinstance(name, str) and name.count("/") == 1 and not name.startswith((".", "/", "~"))
            and not Path(name).exists() and all(name.split("/")))


def hub_unavailable_error(name: str, err: Exception) -> CheckpointError:
    why = str(err).split(". ")[0].splitlines()[0][:160] if str(err) else type(err).__name__
    return CheckpointError(
        f"model folder {name} does not exist, and {name} could not be fetched from the Hugging Face Hub or its "
        f"cache ({type(err).__name__}: {why}); pass a local folder (a Llama folder, or one in the authors' "
        "format), an official TransformerLens name, or run once with the Hub reachable (HF_HUB_OFFLINE unset) "
        f"so it is cached: huggingface-cli download {name.split('/')[0]}/{name.split('/')[1]}")


def hub_config(repo: str, subfolder: Optional[str] = None) -> Dict[str, Any]:
    """``config.json`` of a Hub repo (from the cache when offline); CheckpointError when unavailable."""
    from huggingface_hub import hf_hub_download

    try:
        file = hf_hub_download(repo, "config.json", subfolder=subfolder)
    except Exception as err:  # offline and not cached, no such repo, no network
        raise hub_unavailable_error(repo if subfolder is None else f"{repo}/{subfolder}", err) from err
    return json.loads(Path(file).read_text())


def fetch_authors_repo(repo: str) -> Path:
    """The cached snapshot folder of an authors'-format model repo (downloaded if reachable).

    Only ``config.json`` is fetched before the format is known, so a repo of another format is
    never downloaded whole.
    """
    from huggingface_hub import snapshot_download

    config = hub_config(repo)
    if not is_authors_config(config):
        raise CheckpointError(f"{repo}: its config.json is not the authors' bilinear format "
                              "(architectures ['Transformer']); load other models by their own names.")
    try:
        return Path(snapshot_download(repo, allow_patterns=HUB_MODEL_FILES))
    except Exception as err:
        raise hub_unavailable_error(repo, err) from err


def resolve_model_source(src: Any) -> Path:
    """A local folder for ``src``: the folder itself, or the Hub snapshot of a repo id."""
    path = Path(str(src)).expanduser()
    if path.is_dir():
        return path
    if looks_like_repo_id(str(src)):
        return fetch_authors_repo(str(src))
    raise CheckpointError(f"{src} is neither a local folder nor a Hub repo id (owner/name); pass the folder "
                          "of an authors'-format model (config.json + model.safetensors) or e.g. tdooms/ts-medium.")


def _read(path: Path):
    return read_authors_config(path, json.loads((path / "config.json").read_text()))


def tl_cfg_dict(path: Path, **kwargs: Any) -> Dict[str, Any]:
    """TransformerLens config fields of an authors'-format folder (the tokenizer resolved too)."""
    acfg = _read(path)
    cfg = llama_cfg_dict(path, hf_llama_config(acfg, attention_scale(acfg, kwargs.get(OVERRIDE))))
    tok = resolve_tokenizer_folder(path, acfg.tokenizer)
    cfg["tokenizer_name"] = str(tok) if tok is not None else None
    return cfg


def tl_state_dict(path: Path, cfg: Any, dtype: torch.dtype = torch.float32, **kwargs: Any) -> Dict[str, torch.Tensor]:
    """TransformerLens state dict of an authors'-format folder, with the attention scale folded into ``W_O``."""
    from bilinear_lens.checkpoints.load import convert_bilinear_llama_weights

    dtype = kwargs.pop("torch_dtype", dtype)
    hf = authors_hf_model(path, scale_attn=kwargs.get(OVERRIDE), dtype=dtype)
    _remember(cfg, hf.published)
    return convert_bilinear_llama_weights(hf, cfg)


def official_name(original: Any, model_name: Any) -> Optional[str]:
    """For ``get_official_model_name``: the snapshot folder of an authors'-format Hub repo, else None.

    Only tried when TransformerLens does not know the name; a name of another format keeps
    TransformerLens' own error.
    """
    if not looks_like_repo_id(model_name):
        return None
    try:
        original(model_name)
        return None  # a TransformerLens name
    except ValueError:
        pass
    config = hub_config(model_name)  # offline and not cached: one-line error saying what to do
    if not is_authors_config(config):
        return None
    return str(fetch_authors_repo(model_name))


__all__ = ["fetch_authors_repo", "hub_unavailable_error", "is_authors_folder", "official_name", "resolve_model_source",
           "tl_cfg_dict", "tl_state_dict"]
