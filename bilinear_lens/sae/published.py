"""The authors' published TopK SAEs (``tdooms/<model>-scope``) as SAELens SAEs, exactly.

An authors' SAE folder (``config.json`` with ``point``, ``expansion``, ``k``; ``model.safetensors``
with ``w_enc.weight [d_sae, d]``, ``w_enc.bias [d_sae]`` only if ``encoder_bias``, ``w_dec.weight
[d, d_sae]``, ``b_dec [d]``) computes::

    h     = w_enc (x - b_dec) (+ bias)                               [..., d_sae]
    z     = h on the k largest entries of h BY VALUE, 0 elsewhere    (no ReLU: kept values may be < 0)
    x_hat = w_dec z + b_dec                                          [..., d]

SAELens' ``topk`` architecture applies ReLU to the kept values, so it differs whenever a kept
value is <= 0. :class:`SignedTopKSAE` (architecture ``"bilinear_lens_topk"``) is SAELens' TopK SAE
with the authors' activation; it is registered in SAELens' own registry on ``import
bilinear_lens``, so ``SAE.load_from_disk`` reads the folders ``bilinear-lens import-sae`` writes.
Weights: ``W_enc = w_enc.weight^T``, ``W_dec = w_dec.weight^T``, ``b_enc = bias or 0``, ``b_dec``,
``apply_b_dec_to_input = True``, no activation normalisation, no decoder-norm rescaling.

Hooks (``point = [name, L]``): ``resid-pre`` -> ``blocks.L.hook_resid_pre``; ``resid-mid`` ->
``blocks.L.hook_resid_mid``; ``mlp-in`` (after the weightless norm) -> ``blocks.L.mlp.hook_in``;
``mlp-out`` -> ``blocks.L.hook_mlp_out``; ``resid-post`` -> ``blocks.L.hook_resid_post``;
``attn-out`` -> ``blocks.L.hook_attn_out``, which is ``s`` times the authors' tensor once ``s`` is
folded into ``W_O``, so that SAE is rescaled: ``W_enc / s``, ``W_dec s``, ``b_dec s``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch
from sae_lens import SAE
from sae_lens.registry import SAE_CLASS_REGISTRY, register_sae_class
from sae_lens.saes.sae import SAEMetadata
from sae_lens.saes.topk_sae import TopKSAE, TopKSAEConfig
from torch import nn

ARCHITECTURE = "bilinear_lens_topk"
POINT_HOOKS = {"resid-pre": "blocks.{L}.hook_resid_pre", "resid-mid": "blocks.{L}.hook_resid_mid",
               "mlp-in": "blocks.{L}.mlp.hook_in", "mlp-out": "blocks.{L}.hook_mlp_out",
               "resid-post": "blocks.{L}.hook_resid_post", "attn-out": "blocks.{L}.hook_attn_out"}
# config key: (value the plain SAE has, why another value is not exact)
_REFUSED = {
    "passthrough": ([], "passthrough SAEs add x * mask, and the mask is not saved"),
    "bilinear_encoder": (False, "a bilinear encoder is not a SAELens architecture"),
    "token_lookup": (False, "a token lookup table is not a SAELens architecture"),
    "normalize": (None, "an input normalisation constant the authors' forward does not apply consistently"),
}
PathLike = Union[str, Path]


class SignedTopK(nn.Module):
    """Keep the ``k`` largest entries by value (not by magnitude, no ReLU); zero the rest."""

    def __init__(self, k: int):
        super().__init__()
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values, indices = torch.topk(x, k=self.k, dim=-1, sorted=False)
        return torch.zeros_like(x).scatter(-1, indices, values)


@dataclass
class SignedTopKSAEConfig(TopKSAEConfig):
    """SAELens TopK config whose kept values are not passed through ReLU (the authors' SAEs)."""

    @classmethod
    def architecture(cls) -> str:
        return ARCHITECTURE


class SignedTopKSAE(TopKSAE):
    """SAELens' TopK SAE with the authors' activation, :class:`SignedTopK`."""

    def get_activation_fn(self) -> nn.Module:
        return SignedTopK(self.cfg.k)


def register_sae_architecture() -> None:
    """Register ``"bilinear_lens_topk"`` in SAELens' registry (idempotent)."""
    if ARCHITECTURE not in SAE_CLASS_REGISTRY:
        register_sae_class(ARCHITECTURE, SignedTopKSAE, SignedTopKSAEConfig)


register_sae_architecture()


# ------------------------------------------------------------------------------------ reading
def _refuse(where: Any, key: str, value: Any, why: str) -> ValueError:
    return ValueError(f"{where}: SAE config key {key}={json.dumps(value)}: {why}, so bilinear_lens refuses "
                      "it rather than load a different SAE.")


def is_authors_sae_folder(path: PathLike) -> bool:
    path = Path(path)
    try:
        cfg = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(cfg, dict) and {"point", "k"} <= set(cfg) and (path / "model.safetensors").is_file()


def resolve_sae_source(src: PathLike) -> Path:
    """A local SAE folder, or ``owner/repo/subfolder`` fetched through the Hugging Face cache."""
    path = Path(str(src)).expanduser()
    if path.is_dir():
        return path
    parts = str(src).split("/")
    if len(parts) < 3 or str(src).startswith((".", "/", "~")) or not all(parts):
        raise ValueError(f"SAE {src} is neither a local folder nor repo_id/subfolder (e.g. "
                         "tdooms/ts-medium-scope/5-mlp-in-x4-k30).")
    from huggingface_hub import snapshot_download

    from bilinear_lens.checkpoints.published import hub_unavailable_error

    repo, sub = "/".join(parts[:2]), "/".join(parts[2:])
    try:
        root = Path(snapshot_download(repo, allow_patterns=[f"{sub}/config.json", f"{sub}/model.safetensors"]))
    except Exception as err:  # offline and not cached, no network, no such repo
        raise hub_unavailable_error(str(src), err) from err
    if not (root / sub / "config.json").is_file():
        raise ValueError(f"{repo} has no SAE folder {sub}/ (config.json + model.safetensors); check the name.")
    return root / sub


def read_authors_sae(path: PathLike) -> Tuple[Dict[str, Any], Dict[str, torch.Tensor]]:
    """The config and tensors of an authors' SAE folder, every non-plain variant refused by key."""
    from safetensors.torch import load_file

    path = Path(path)
    if not is_authors_sae_folder(path):
        raise ValueError(f"{path} is not an authors' SAE folder (config.json with point and k, and model.safetensors).")
    cfg = json.loads((path / "config.json").read_text())
    for key, (plain, why) in _REFUSED.items():
        if cfg.get(key, plain) not in (plain, None, [], False):
            raise _refuse(path, key, cfg[key], why)
    target = cfg.get("target")
    if target not in (None, cfg["point"]) and list(target) != list(cfg["point"]):
        raise _refuse(path, "target", target, "an SAE that reconstructs another point than it reads is not an SAE "
                      "of one hook")
    tensors = load_file(str(path / "model.safetensors"))
    expected = {"w_enc.weight", "w_dec.weight", "b_dec"} | ({"w_enc.bias"} if cfg.get("encoder_bias") else set())
    if set(tensors) != expected:
        extra = sorted(set(tensors) ^ expected)
        raise ValueError(f"{path}/model.safetensors: tensor {extra[0]} is {'unexpected' if extra[0] in tensors else 'missing'} "
                         f"(encoder_bias={cfg.get('encoder_bias', False)}); not the authors' plain TopK SAE.")
    d_sae, d = tensors["w_enc.weight"].shape
    if tensors["w_dec.weight"].shape != (d, d_sae) or tensors["b_dec"].shape != (d,):
        raise ValueError(f"{path}: w_dec.weight {tuple(tensors['w_dec.weight'].shape)} / b_dec "
                         f"{tuple(tensors['b_dec'].shape)} do not match w_enc.weight {(d_sae, d)}.")
    if not 1 <= int(cfg["k"]) <= d_sae:
        raise _refuse(path, "k", cfg["k"], f"it must lie in 1..{d_sae}")
    return cfg, tensors


def point_hook(point: Any) -> Tuple[str, int, str]:
    """``(name, layer, TransformerLens hook)`` of an authors' ``point`` (``["mlp-in", 5]``)."""
    if isinstance(point, dict):
        point = [point.get("name"), point.get("layer")]
    name, layer = str(point[0]).replace("_", "-"), int(point[1])
    if name not in POINT_HOOKS:
        raise ValueError(f"SAE point {point!r}: unknown hook point {name!r}; known: {sorted(POINT_HOOKS)}.")
    return name, layer, POINT_HOOKS[name].format(L=layer)


def _attn_scale(point: str, model: Any, attn_scale: Optional[float]) -> float:
    if point != "attn-out":
        return 1.0
    if attn_scale is None and model is not None:
        from bilinear_lens.checkpoints.authors import published_info

        info = published_info(model)
        attn_scale = info.attn_scale if info is not None else None
    if attn_scale is None:
        raise ValueError("an attn-out SAE reads the attention output before the scale s that loading folds into "
                         "W_O; pass model= (the loaded authors' model) or attn_scale=s.")
    return float(attn_scale)


def load_sae(src: PathLike, model: Any = None, attn_scale: Optional[float] = None, device: str = "cpu",
             model_name: Optional[str] = None) -> SAE:
    """A SAELens SAE computing the authors' SAE in ``src`` exactly, hooked where its ``point`` says.

    ``src``: an SAE folder in the authors' format, or ``repo_id/subfolder`` (Hugging Face cache).
    ``model`` / ``attn_scale``: only for ``attn-out`` SAEs (the folded scale ``s``). A
    ``resid-mid`` SAE reads ``blocks.L.hook_resid_mid`` exactly; it is *not* an SAE of the MLP
    input (see docs/published_models.md).
    """
    path = resolve_sae_source(src)
    cfg, t = read_authors_sae(path)
    point, layer, hook = point_hook(cfg["point"])
    s = _attn_scale(point, model, attn_scale)
    d_sae, d = t["w_enc.weight"].shape
    meta = SAEMetadata(hook_name=hook, hook_head_index=None, model_name=model_name or cfg.get("model") or str(src),
                       context_size=int(cfg.get("n_ctx", 256)), prepend_bos=True, model_class_name="HookedTransformer",
                       model_from_pretrained_kwargs={}, dataset_path="", source=str(src), authors_point=[point, layer],
                       attn_scale=s)
    sae_cfg = SignedTopKSAEConfig(d_in=d, d_sae=d_sae, k=int(cfg["k"]), apply_b_dec_to_input=True,
                                  normalize_activations="none", rescale_acts_by_decoder_norm=False,
                                  device=device, dtype="float32", metadata=meta)
    sae = SignedTopKSAE(sae_cfg)
    bias = t.get("w_enc.bias", torch.zeros(d_sae))
    with torch.no_grad():
        sae.W_enc.copy_(t["w_enc.weight"].T / s)
        sae.W_dec.copy_(t["w_dec.weight"].T * s)
        sae.b_enc.copy_(bias)
        sae.b_dec.copy_(t["b_dec"] * s)
    return sae.to(device)


__all__ = ["ARCHITECTURE", "POINT_HOOKS", "SignedTopK", "SignedTopKSAE", "SignedTopKSAEConfig",
           "is_authors_sae_folder", "load_sae", "point_hook", "read_authors_sae", "register_sae_architecture",
           "resolve_sae_source"]
