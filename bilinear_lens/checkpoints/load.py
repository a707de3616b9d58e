"""Loading local Hugging Face Llama folders (bilinear or SwiGLU) into TransformerLens.

The three functions named like TransformerLens' ``loading_from_pretrained`` functions are the
wrappers that :func:`bilinear_lens.registration.register` installs: each takes the original as its
first argument, handles local Llama folders and delegates everything else unchanged, so
official model names behave exactly as before.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Union

import torch
from transformer_lens.config.hooked_transformer_config import HookedTransformerConfig
from transformer_lens.pretrained.weight_conversions.llama import convert_llama_weights

from bilinear_lens.checkpoints import published
from bilinear_lens.checkpoints.hf_config import (
    SUPPORTED_LOCAL_ARCHITECTURES,
    CheckpointError,
    architecture_name,
    is_llama_config,
    llama_cfg_dict,
    read_config,
)

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def _local_dir(name: Any) -> Optional[Path]:
    """The folder behind ``name`` if it is a local directory, else None."""
    if not isinstance(name, (str, os.PathLike)):
        return None
    path = Path(name).expanduser()
    return path if path.is_dir() else None


def _local_llama(name: Any) -> Optional[Path]:
    path = _local_dir(name)
    return path if path is not None and is_llama_config(read_config(path)) else None


def check_weights(path: Union[str, Path]) -> None:
    """Raise :class:`CheckpointError` if the folder's weight files are missing, truncated or corrupt.

    A safetensors file is ``[8-byte header length n][n-byte JSON header][data]``; the file must be
    exactly ``8 + n + max(end offset)`` bytes long.
    """
    path = Path(path)
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError) as err:
            raise CheckpointError(f"{index} is corrupt ({err}); re-save the model.") from err
        files = [path / s for s in shards]
    elif (path / "model.safetensors").is_file():
        files = [path / "model.safetensors"]
    elif (path / "pytorch_model.bin").is_file():
        _check_torch_bin(path / "pytorch_model.bin")
        return
    else:
        raise CheckpointError(
            f"{path} has a config.json but no weights ({', '.join(WEIGHT_FILES)}). Save the model "
            "with bilinear_lens.save_pretrained(model, path)."
        )
    for file in files:
        _check_safetensors(file)


def _check_safetensors(file: Path) -> None:
    fix = "The file is truncated or corrupt: re-save the model (bilinear_lens.save_pretrained) or copy it again."
    if not file.is_file():
        raise CheckpointError(f"weights shard {file} is missing. {fix}")
    size = file.stat().st_size
    with open(file, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{file} is {size} bytes, too short for a safetensors header. {fix}")
        n = int.from_bytes(head, "little")
        if 8 + n > size:
            raise CheckpointError(f"{file}: header says {n} bytes but the file has {size}. {fix}")
        try:
            header = json.loads(fh.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise CheckpointError(f"{file}: unreadable safetensors header ({err}). {fix}") from err
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
    expected = 8 + n + max(ends, default=0)
    if expected != size:
        raise CheckpointError(f"{file} should be {expected} bytes but is {size}. {fix}")


def _check_torch_bin(file: Path) -> None:
    """A ``pytorch_model.bin`` is read with ``torch.load(weights_only=True)`` (tensors only, no code);
    a truncated file or one needing arbitrary Python objects is refused with one line."""
    try:
        torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # truncated zip, bad magic, weights_only refuses a Python object
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:120]
        raise CheckpointError(f"{file} cannot be read as plain tensors ({type(err).__name__}: {first}); it is "
                              "truncated, corrupt or needs Python objects, which are never loaded: re-save the model "
                              "as safetensors.") from err


def _looks_like_path(name: str) -> bool:
    return name.startswith(("./", "../", "/", "~")) or os.sep in name


def missing_folder(name: str) -> CheckpointError:
    path = Path(name).expanduser()
    what = "is a file, not a model folder" if path.is_file() else "does not exist"
    return CheckpointError(f"model folder {name} {what}; pass a folder holding config.json and the weights "
                           "(bilinear_lens.save_pretrained writes one), or an official TransformerLens model name.")


def unsupported_architecture(path: Path, config: Dict[str, Any]) -> CheckpointError:
    return CheckpointError(
        f"{path}: architecture {architecture_name(config)} cannot be loaded. bilinear_lens loads "
        f"local folders of {', '.join(SUPPORTED_LOCAL_ARCHITECTURES)} (bilinear with "
        "hidden_act='linear', or gated silu/gelu/relu), and TransformerLens' built-in "
        "architectures by their official names. Convert the model to a Llama folder first."
    )


# --------------------------------------------------------------------------- loading wrappers
def get_official_model_name(original: Callable, model_name: str) -> str:
    """A local model folder is its own official name (stock TransformerLens rejects it)."""
    path = _local_dir(model_name)
    if path is not None:
        read_config(path)  # clear error for a folder without config.json
        return str(model_name)
    if isinstance(model_name, (str, os.PathLike)):
        name = os.fspath(model_name)
        if Path(name).expanduser().is_file() or name.startswith(("./", "../", "/", "~")):
            raise missing_folder(name)
        hub = published.official_name(original, model_name)  # an authors'-format Hub repo id
        if hub is not None:
            return hub
        if _looks_like_path(name):  # "org/name" may still be an official name
            try:
                return original(model_name)
            except ValueError:
                raise missing_folder(name) from None
    return original(model_name)


def convert_hf_model_config(original: Callable, model_name: str, **kwargs: Any) -> Dict[str, Any]:
    """Config dict for a local Llama folder (any name, including ones containing "llama")."""
    path = _local_dir(model_name)
    if path is None:
        return original(model_name, **kwargs)
    if published.is_authors_folder(path):
        return published.tl_cfg_dict(path, **kwargs)
    config = read_config(path)
    if is_llama_config(config):
        return llama_cfg_dict(model_name, config)
    raise unsupported_architecture(path, config)  # a local folder of any other architecture


def convert_bilinear_llama_weights(hf_model: Any, cfg: HookedTransformerConfig) -> Dict[str, torch.Tensor]:
    """TransformerLens state dict of a HF ``LlamaForCausalLM``, keeping every bias.

    TransformerLens' ``convert_llama_weights`` writes zeros for MLP and attention biases; here
    ``b_in = up_proj.bias``, ``b_gate = gate_proj.bias``, ``b_out = down_proj.bias`` and the
    q/k/v/o biases (``[n_heads, d_head]`` per head) are copied when the checkpoint has them.
    """
    sd = convert_llama_weights(hf_model, cfg)
    gqa = "_" if cfg.n_key_value_heads is not None else ""
    n_kv = cfg.n_key_value_heads or cfg.n_heads
    for l in range(cfg.n_layers):
        layer = hf_model.model.layers[l]
        mlp, attn = layer.mlp, layer.self_attn
        for key, lin in (("b_in", mlp.up_proj), ("b_gate", mlp.gate_proj), ("b_out", mlp.down_proj)):
            if lin.bias is not None:
                sd[f"blocks.{l}.mlp.{key}"] = lin.bias
        for key, lin, heads in (("b_Q", attn.q_proj, cfg.n_heads), (f"{gqa}b_K", attn.k_proj, n_kv),
                                (f"{gqa}b_V", attn.v_proj, n_kv)):
            if lin.bias is not None:
                sd[f"blocks.{l}.attn.{key}"] = lin.bias.reshape(heads, cfg.d_head)
        if attn.o_proj.bias is not None:
            sd[f"blocks.{l}.attn.b_O"] = attn.o_proj.bias
    return sd


def load_hf_model(path: Union[str, Path], dtype: torch.dtype = torch.float32, **kwargs: Any) -> Any:
    """``AutoModelForCausalLM.from_pretrained(path)`` after checking the weight files."""
    from transformers import AutoModelForCausalLM

    from bilinear_lens.runs.checks import require_finite

    check_weights(path)
    kwargs["weights_only"] = True  # never load Python objects from a folder
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, **kwargs)
    require_finite(model.state_dict(), str(path), "the checkpoint is broken: re-save a finite model")
    return model


def get_pretrained_state_dict(
    original: Callable,
    official_model_name: str,
    cfg: HookedTransformerConfig,
    hf_model: Any = None,
    dtype: torch.dtype = torch.float32,
    **kwargs: Any,
) -> Dict[str, torch.Tensor]:
    """State dict for a local Llama folder (biases kept); anything else goes to TransformerLens."""
    if published.is_authors_folder(_local_dir(official_model_name)):
        return published.tl_state_dict(Path(official_model_name), cfg, dtype=dtype, **kwargs)
    path = _local_llama(official_model_name)
    if path is None:
        return original(official_model_name, cfg, hf_model=hf_model, dtype=dtype, **kwargs)
    dtype = kwargs.pop("torch_dtype", dtype)
    if hf_model is None:
        hf_model = load_hf_model(path, dtype=dtype, **kwargs)
    return convert_bilinear_llama_weights(hf_model, cfg)
