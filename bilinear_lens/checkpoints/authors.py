"""The authors' published bilinear transformers (``tdooms/ts-medium``, ``fw-small``, ...) as Llama models.

Their forward pass (``config.json`` with ``"architectures": ["Transformer"]``, one float32
``model.safetensors``; ``d = d_model``, ``h = d_hidden``, ``H = n_head``, ``d_head = d / H``)::

    x = wte[ids]                                                   [B, T, d]
    x = x + s * o(attn(n(x)))      qkv [3d, d]: rows Q | K | V, head-major (H, d_head) inside each
    x = x + p(left(n(x)) * right(n(x)))     w [2h, d]: rows left | right;  p [d, h]
    logits = lm_head(n(x))                                         [B, T, vocab]

with the weightless ``n(x) = x * rsqrt(mean(x^2) + 1e-8)``, rotate-half RoPE (base 10000, full
head dimension), causal softmax attention with scores ``q.k / sqrt(d_head)`` and the branch scale
``s = 1/sqrt(2 n_layer)`` when ``scale_attn`` is true **or absent**, else 1.

Every piece is a Llama block after renaming, and ``s`` folds exactly into ``o_proj``
(``W_O <- s W_O``): ``q_proj, k_proj, v_proj = qkv[:d], qkv[d:2d], qkv[2d:]``, ``gate_proj, up_proj
= w[:h], w[h:]``, ``down_proj = p``, norms of ones with ``rms_norm_eps = 1e-8``, ``hidden_act =
"linear"`` (or the GLU gate ``relu``/``silu``/``gelu``, applied to the left half as Llama applies
it to ``gate_proj``), ``tie_word_embeddings = false``. After folding, TransformerLens'
``hook_attn_out`` is ``s`` times the authors' attention output.

The format is recognised from the folder's contents (config keys and tensor names), never from
its name. Variants that are not a Llama block are refused with a one-line error naming the key.
"""

from __future__ import annotations

import json
import math
import weakref
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import torch

from bilinear_lens.checkpoints.hf_config import CheckpointError

PathLike = Union[str, Path]
WEIGHTS = "model.safetensors"
RMS_EPS = 1e-8
ROPE_BASE = 10000.0
GATES = {None: "linear", "relu": "relu", "silu": "silu", "gelu": "gelu"}
"""The authors' ``gate`` -> Hugging Face ``hidden_act`` (TransformerLens computes each exactly)."""
_AUTHORS_KEYS = {"n_head", "n_layer", "d_model", "d_hidden"}
_LAYER_TENSORS = ("attn.qkv.weight", "attn.o.weight", "mlp.w.weight", "mlp.p.weight")
_INV_FREQ = "attn.rotary.inv_freq"
# key: (value that is a Llama block, why another value is not)
_REFUSED = {
    "normalization": (True, "norms replaced by identity (the linearised-norm finetunes) are not a Llama block"),
    "attention2": (False, "the bilinear attention variant (two score maps, 5d qkv rows) is not Llama attention"),
    "bias": (False, "biases are not supported for the authors' format"),
    "norm_bias": (False, "RMSNorm biases are not a Llama block"),
    "bilinear": (True, "a non-gated MLP is not a Llama block"),
}


@dataclass(frozen=True)
class AuthorsConfig:
    """The settings of an authors'-format model that define its computation."""

    n_layer: int
    n_head: int
    d_model: int
    d_hidden: int
    n_ctx: int
    vocab: int
    gate: Optional[str]
    scale_attn: bool          # what the config says (absent = true)
    scale_attn_key: Optional[bool]  # the raw key (None = absent)
    tokenizer: Optional[str]
    has_inv_freq: bool

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_head


@dataclass(frozen=True)
class PublishedInfo:
    """How a published model was loaded; ``attn_scale`` is folded into every ``W_O``."""

    source: str
    scale_attn_key: Optional[bool]
    scale_attn: bool
    attn_scale: float
    overridden: bool
    gate: Optional[str]
    tokenizer: Optional[str]

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------------------------ detection
def _header(file: Path) -> Dict[str, Any]:
    with open(file, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        return json.loads(fh.read(n))


def tensor_shapes(path: PathLike) -> Dict[str, List[int]]:
    """Tensor name -> shape of ``path/model.safetensors``, read from its header only."""
    file = Path(path) / WEIGHTS
    if not file.is_file():
        raise CheckpointError(f"{path}: the authors' format keeps its weights in {WEIGHTS}, which is missing; "
                              "download the whole repo (config.json and model.safetensors).")
    try:
        head = _header(file)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{file}: unreadable safetensors header ({err}); download it again.") from err
    return {k: v["shape"] for k, v in head.items() if k != "__metadata__"}


def is_authors_config(config: Dict[str, Any]) -> bool:
    """True for the authors' model config: ``architectures == ["Transformer"]`` or their keys, no ``model_type``."""
    if config.get("model_type"):
        return False
    return config.get("architectures") == ["Transformer"] or _AUTHORS_KEYS <= set(config)


def is_authors_folder(path: Any) -> bool:
    """A local folder whose config and tensor names are the authors' model format."""
    try:
        path = Path(path)
        config = json.loads((path / "config.json").read_text())
    except (OSError, TypeError, ValueError):
        return False
    if not isinstance(config, dict) or not is_authors_config(config):
        return False
    file = path / WEIGHTS
    if not file.is_file():
        return True  # an authors' config without weights: read_authors_config says what is missing
    try:
        return "transformer.wte.weight" in _header(file)
    except (OSError, ValueError):
        return True


# ------------------------------------------------------------------------------------ config
def _refuse(path: PathLike, key: str, value: Any, why: str) -> CheckpointError:
    return CheckpointError(f"{path}: config key {key}={json.dumps(value)}: {why}, so this model cannot be "
                           "loaded exactly; bilinear_lens refuses it rather than load a different model.")


def read_authors_config(path: PathLike, config: Dict[str, Any]) -> AuthorsConfig:
    """Validate an authors' config against its tensors; refuse every variant that is not a Llama block."""
    for key, (ok, why) in _REFUSED.items():
        if key in config and config[key] != ok and not (key == "bias" and config[key] is None):
            raise _refuse(path, key, config[key], why)
    gate = config.get("gate")
    if gate not in GATES:
        raise _refuse(path, "gate", gate, f"only {sorted(g for g in GATES if g)} or null have an exact "
                      "TransformerLens gated MLP")
    scale_key = config.get("scale_attn")
    if scale_key is not None and not isinstance(scale_key, bool):
        raise _refuse(path, "scale_attn", scale_key, "it must be true or false")
    dims = {k: config.get(k, d) for k, d in (("n_head", 4), ("n_layer", 4), ("d_model", 256),
                                             ("d_hidden", 1024), ("n_ctx", 256))}
    if dims["d_model"] % dims["n_head"]:
        raise _refuse(path, "n_head", dims["n_head"], f"it does not divide d_model={dims['d_model']}")
    shapes = tensor_shapes(path)
    wte = shapes.get("transformer.wte.weight")
    if wte is None:
        raise CheckpointError(f"{path}/{WEIGHTS} has no tensor transformer.wte.weight: not the authors' format.")
    acfg = AuthorsConfig(vocab=wte[0], gate=gate, scale_attn=scale_key is not False, scale_attn_key=scale_key,
                         tokenizer=config.get("tokenizer"), has_inv_freq=False, **dims)
    has_inv = _check_tensors(path, acfg, shapes)
    return AuthorsConfig(**{**asdict(acfg), "has_inv_freq": has_inv})


def expected_shapes(acfg: AuthorsConfig) -> Dict[str, List[int]]:
    d, h, v = acfg.d_model, acfg.d_hidden, acfg.vocab
    out = {"transformer.wte.weight": [v, d], "lm_head.weight": [v, d]}
    for i in range(acfg.n_layer):
        p = f"transformer.h.{i}."
        out.update({p + "attn.qkv.weight": [3 * d, d], p + "attn.o.weight": [d, d],
                    p + "mlp.w.weight": [2 * h, d], p + "mlp.p.weight": [d, h]})
    return out


def _check_tensors(path: PathLike, acfg: AuthorsConfig, shapes: Dict[str, List[int]]) -> bool:
    """Every tensor present with its shape, nothing unknown; returns whether inv_freq buffers are there."""
    want = expected_shapes(acfg)
    for name, shape in want.items():
        if name not in shapes:
            raise CheckpointError(f"{path}/{WEIGHTS} lacks tensor {name} {shape} (config: n_layer={acfg.n_layer}); "
                                  "the file does not match its config.json.")
        if list(shapes[name]) != shape:
            raise CheckpointError(f"{path}/{WEIGHTS}: tensor {name} is {shapes[name]}, the config implies {shape}; "
                                  "the file does not match its config.json.")
    inv = {f"transformer.h.{i}.{_INV_FREQ}" for i in range(acfg.n_layer)}
    extra = sorted(set(shapes) - set(want) - inv)
    if extra:
        raise CheckpointError(f"{path}/{WEIGHTS} has tensor {extra[0]} (and {len(extra) - 1} more unknown), which "
                              "the plain authors' model does not have (a modified variant?); it cannot be loaded exactly.")
    present = inv & set(shapes)
    if present and present != inv:
        raise CheckpointError(f"{path}/{WEIGHTS} has inv_freq buffers for some layers only; download it again.")
    return bool(present)


def attention_scale(acfg: AuthorsConfig, scale_attn: Optional[bool] = None) -> float:
    """``s = 1/sqrt(2 n_layer)`` if ``scale_attn`` (the override, else the config; absent = true), else 1."""
    use = acfg.scale_attn if scale_attn is None else bool(scale_attn)
    return 1.0 / math.sqrt(2.0 * acfg.n_layer) if use else 1.0


def rope_inv_freq(d_head: int) -> torch.Tensor:
    return 1.0 / (ROPE_BASE ** (torch.arange(0, d_head, 2).float() / d_head))


def hf_llama_config(acfg: AuthorsConfig, attn_scale: float, info: Optional[PublishedInfo] = None,
                    special_ids: Optional[Dict[str, Optional[int]]] = None) -> Dict[str, Any]:
    """The ``LlamaConfig`` dict of the same computation (with ``attn_scale`` folded into ``o_proj``)."""
    ids = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": None, **(special_ids or {})}
    cfg = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": acfg.vocab, "hidden_size": acfg.d_model, "intermediate_size": acfg.d_hidden,
        "num_hidden_layers": acfg.n_layer, "num_attention_heads": acfg.n_head,
        "num_key_value_heads": acfg.n_head, "head_dim": acfg.d_head,
        "max_position_embeddings": acfg.n_ctx, "rms_norm_eps": RMS_EPS, "hidden_act": GATES[acfg.gate],
        "rope_theta": ROPE_BASE, "rope_parameters": {"rope_type": "default", "rope_theta": ROPE_BASE},
        "tie_word_embeddings": False, "attention_bias": False, "mlp_bias": False,
        "attention_dropout": 0.0, "initializer_range": 0.02, "use_cache": True, "dtype": "float32", **ids,
    }
    if info is not None:
        cfg["bilinear_lens_source"] = {"format": "tdooms Transformer", **info.to_dict()}
    return cfg


# ------------------------------------------------------------------------------------ tensors
def load_authors_tensors(path: PathLike, acfg: AuthorsConfig) -> Dict[str, torch.Tensor]:
    """The tensors of ``model.safetensors``; the inv_freq buffers, when present, must be the standard ones."""
    from safetensors.torch import load_file

    tensors = load_file(str(Path(path) / WEIGHTS))
    expected = rope_inv_freq(acfg.d_head)
    for i in range(acfg.n_layer):
        buf = tensors.pop(f"transformer.h.{i}.{_INV_FREQ}", None)
        if buf is not None and not torch.allclose(buf.float(), expected, rtol=1e-6, atol=0):
            raise CheckpointError(f"{path}: transformer.h.{i}.{_INV_FREQ} is not 1/10000^(2i/d_head): a RoPE base "
                                  "other than 10000 is not the published format.")
    return tensors


def hf_llama_state_dict(tensors: Dict[str, torch.Tensor], acfg: AuthorsConfig,
                        attn_scale: float) -> Dict[str, torch.Tensor]:
    """HF ``LlamaForCausalLM`` tensors: qkv split in thirds, ``w`` in halves, ``s`` folded into ``o_proj``."""
    d, h = acfg.d_model, acfg.d_hidden
    ones = torch.ones(d, dtype=tensors["transformer.wte.weight"].dtype)
    out = {"model.embed_tokens.weight": tensors["transformer.wte.weight"],
           "lm_head.weight": tensors["lm_head.weight"], "model.norm.weight": ones.clone()}
    for i in range(acfg.n_layer):
        a, m = f"transformer.h.{i}.attn.", f"transformer.h.{i}.mlp."
        p = f"model.layers.{i}."
        qkv, w = tensors[a + "qkv.weight"], tensors[m + "w.weight"]
        out.update({
            p + "self_attn.q_proj.weight": qkv[:d], p + "self_attn.k_proj.weight": qkv[d:2 * d],
            p + "self_attn.v_proj.weight": qkv[2 * d:],
            p + "self_attn.o_proj.weight": tensors[a + "o.weight"] * attn_scale,
            p + "mlp.gate_proj.weight": w[:h], p + "mlp.up_proj.weight": w[h:],
            p + "mlp.down_proj.weight": tensors[m + "p.weight"],
            p + "input_layernorm.weight": ones.clone(), p + "post_attention_layernorm.weight": ones.clone(),
        })
    return {k: v.contiguous() for k, v in out.items()}


# ------------------------------------------------------------------------------------ models
_INFO_BY_ID: Dict[int, PublishedInfo] = {}


def _remember(cfg: Any, info: PublishedInfo) -> None:
    """Record ``info`` for the TransformerLens config ``cfg`` (the model's ``cfg`` object)."""
    key = id(cfg)
    _INFO_BY_ID[key] = info
    weakref.finalize(cfg, _INFO_BY_ID.pop, key, None)


def published_info(model: Any) -> Optional[PublishedInfo]:
    """How ``model`` was loaded from the authors' format (folded ``attn_scale``, ...), or None."""
    info = getattr(model, "published", None)
    if isinstance(info, PublishedInfo):
        return info
    info = _INFO_BY_ID.get(id(getattr(model, "cfg", None)))
    if info is not None:
        try:
            model.published = info
        except AttributeError:
            pass
    return info


def authors_hf_model(path: PathLike, scale_attn: Optional[bool] = None, dtype: torch.dtype = torch.float32,
                     special_ids: Optional[Dict[str, Optional[int]]] = None,
                     attn_implementation: Optional[str] = None) -> Any:
    """An HF ``LlamaForCausalLM`` computing the authors' model in ``path`` exactly (``s`` folded).

    ``attn_implementation`` (e.g. ``"eager"``, what the TransformerBridge loads with) is passed to
    the config; the default is transformers' own.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    acfg = read_authors_config(path, json.loads((Path(path) / "config.json").read_text()))
    info = make_info(path, acfg, scale_attn)
    extra = {} if attn_implementation is None else {"attn_implementation": attn_implementation}
    hf_cfg = LlamaConfig(**hf_llama_config(acfg, info.attn_scale, info, special_ids), **extra)
    sd = hf_llama_state_dict(load_authors_tensors(path, acfg), acfg, info.attn_scale)
    with torch.device("meta"):
        model = LlamaForCausalLM(hf_cfg)
    model.load_state_dict({k: v.to(dtype) for k, v in sd.items()}, strict=True, assign=True)
    for module in model.modules():  # rotary buffers are non-persistent: rebuild them off the meta device
        if hasattr(module, "inv_freq") and getattr(module, "inv_freq").is_meta:
            inv = rope_inv_freq(acfg.d_head)
            module.register_buffer("inv_freq", inv, persistent=False)
            if hasattr(module, "original_inv_freq"):
                module.original_inv_freq = inv
    model.published = info
    return model.eval()


def make_info(path: PathLike, acfg: AuthorsConfig, scale_attn: Optional[bool]) -> PublishedInfo:
    return PublishedInfo(source=str(path), scale_attn_key=acfg.scale_attn_key,
                         scale_attn=acfg.scale_attn if scale_attn is None else bool(scale_attn),
                         attn_scale=attention_scale(acfg, scale_attn), overridden=scale_attn is not None,
                         gate=acfg.gate, tokenizer=acfg.tokenizer)
