"""Registering bilinear MLPs with TransformerLens (3.9 and 4.x), SAELens and the TransformerBridge.

``register()`` runs when TransformerLens is imported (at once if ``import bilinear_lens`` finds it imported
already; otherwise the moment it is, :mod:`bilinear_lens._after_import`, so ``import bilinear_lens`` itself loads
neither torch nor TransformerLens); importing this module registers too. It is idempotent and ``unregister()``
undoes it. The package's heavier modules (``BilinearMLP``, the loaders) are imported when a wrapper is first
called, never at registration, since registration may run while one of them is importing TransformerLens.

**Public extension points** (used wherever they suffice):

* ``ArchitectureAdapterFactory.register_adapter("LlamaForCausalLM", BilinearLlamaArchitectureAdapter)``:
  ``TransformerBridge.boot_transformers(folder)`` builds :class:`~bilinear_lens.bridge.BilinearMLPBridge`
  MLPs for bilinear Llama folders (``hidden_act="linear"``) and the stock mapping for all others.
* The entry point ``BilinearLlamaForCausalLM`` in the group ``transformer_lens.architectures``
  (``pyproject.toml``): TransformerLens loads it when it first selects an adapter, which imports
  ``bilinear_lens`` and so runs this registration, also in a process that never imports it.
* ``SUPPORTED_ACTIVATIONS["bilinear"]`` / ``["linear"]`` = identity (the registry of activation
  names that config validation and the activation factory share; mutated in place).

**Patches** (TransformerLens 3.x's ``HookedTransformer`` loading has no registry, and
``TransformerBridge.boot_transformers`` reads a Hugging Face config, which the authors' published format
lacks, before it consults its registry): the table :data:`PATCHES` is the complete list. Each entry names
its target ``module:attribute``, why it is needed, and when it applies (``"hooked"``: TransformerLens < 4,
whose ``HookedTransformer`` stack 4.0 removed; ``"hooked_sae"``: that and SAELens, for
``HookedSAETransformer``; ``"always"``: every supported version). Every applicable target is
resolved before anything is changed; a missing one raises :class:`RegistrationError` naming the target and
the installed TransformerLens version (never a silent skip: a skipped patch would silently change what a
model computes). SAELens' rows are resolved and applied when SAELens' module is imported (at once if it
already is), with the same check, so registering does not import SAELens.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Callable, List, Tuple

import torch

from bilinear_lens._after_import import after_import, cancel_all
from bilinear_lens.components.act_fns import BILINEAR_ACT_FNS, is_bilinear_act_fn


def _bilinear_mlp() -> type:
    from bilinear_lens.components.bilinear_mlp import BilinearMLP

    return BilinearMLP

ADAPTER_ARCHITECTURES = ("LlamaForCausalLM",)
"""HF architecture names whose bridge adapter :func:`register` replaces (bilinear folders are Llama folders)."""
ENTRY_POINT_GROUP = "transformer_lens.architectures"
ENTRY_POINT_NAME = "BilinearLlamaForCausalLM"


class RegistrationError(RuntimeError):
    """TransformerLens (or SAELens) no longer has an attribute the plugin must wrap."""


def transformer_lens_version() -> str:
    try:
        return metadata.version("transformer-lens")
    except metadata.PackageNotFoundError:  # pragma: no cover - a source checkout
        import transformer_lens

        return getattr(transformer_lens, "__version__", "unknown")


def has_hooked_transformer() -> bool:
    """True on TransformerLens 3.x (4.0 removed ``HookedTransformer`` and its loading code)."""
    major = transformer_lens_version().split(".")[0]
    return not (major.isdigit() and int(major) >= 4)


def has_sae_lens() -> bool:
    return importlib.util.find_spec("sae_lens") is not None


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


# ------------------------------------------------------------------------------- the wrappers


def _create_mlp(original: Callable) -> Callable:
    original = getattr(original, "__func__", original)

    @functools.wraps(original)
    def create_mlp(cfg):
        if is_bilinear_act_fn(cfg.act_fn) and not cfg.gated_mlp:
            raise ValueError(
                f"act_fn={cfg.act_fn!r} with gated_mlp=False would be a purely linear MLP; a bilinear "
                "MLP is a gated one: set gated_mlp=True."
            )
        if cfg.gated_mlp and not cfg.num_experts and is_bilinear_act_fn(cfg.act_fn):
            return _bilinear_mlp()(cfg)
        return original(cfg)

    return staticmethod(create_mlp)


def _loading(ours_name: str) -> Callable[[Callable], Callable]:
    def make(original: Callable) -> Callable:
        @functools.wraps(original)
        def wrapper(*args, **kwargs):
            from bilinear_lens.checkpoints import load as ckpt

            return getattr(ckpt, ours_name)(original, *args, **kwargs)

        return wrapper

    return make


def _boot_transformers(original: Any) -> Any:
    from bilinear_lens.bridge.published import wrap_boot_transformers

    return wrap_boot_transformers(original)


def _sae_lens_hook_in(original: Callable) -> Callable:
    @functools.wraps(original)
    def add_hook_in_to_mlp(mlp):
        if isinstance(mlp, _bilinear_mlp()):
            return  # it already has a real hook_in
        return original(mlp)

    return add_hook_in_to_mlp


@dataclass(frozen=True)
class Patch:
    """One wrapped upstream attribute: ``module:attribute`` (``attribute`` may be ``Class.name``)."""

    module: str
    attribute: str
    wrap: Callable[[Any], Any]
    needs: str  # "hooked" (TransformerLens < 4), "hooked_sae" (and SAELens installed) or "always"
    why: str

    @property
    def target(self) -> str:
        return f"{self.module}:{self.attribute}"

    def applies(self) -> bool:
        if self.needs == "hooked_sae":
            return has_hooked_transformer() and has_sae_lens()
        return {"hooked": has_hooked_transformer, "always": lambda: True}[self.needs]()


PATCHES: Tuple[Patch, ...] = (
    Patch("transformer_lens.factories.mlp_factory", "MLPFactory.create_mlp", _create_mlp, "hooked",
          "HookedTransformer blocks get BilinearMLP for act_fn='bilinear'/'linear' (and refuse gated_mlp=False)"),
    Patch("transformer_lens.loading_from_pretrained", "get_official_model_name",
          _loading("get_official_model_name"), "hooked", "a local model folder is its own official name"),
    Patch("transformer_lens.loading_from_pretrained", "convert_hf_model_config",
          _loading("convert_hf_model_config"), "hooked", "config of local Llama folders (bilinear or SwiGLU)"),
    Patch("transformer_lens.loading_from_pretrained", "get_pretrained_state_dict",
          _loading("get_pretrained_state_dict"), "hooked", "weights of local Llama folders, MLP biases included"),
    Patch("transformer_lens.model_bridge.sources.transformers", "TransformerBridge.boot_transformers",
          _boot_transformers,
          "always", "the authors' published format (tdooms/*) has no Hugging Face config, which boot_transformers "
          "reads before any adapter is consulted: boot it from its exact in-memory Llama (hf_model=, tokenizer=)"),
    Patch("sae_lens.analysis.hooked_sae_transformer", "add_hook_in_to_mlp", _sae_lens_hook_in, "hooked_sae",
          "HookedSAETransformer keeps BilinearMLP's own hook_in instead of adding a second one"),
)
"""Every upstream attribute the plugin wraps; nothing outside this table is patched."""

EXTENSION_POINTS: Tuple[Tuple[str, str, str], ...] = (
    ("transformer_lens.factories.architecture_adapter_factory", "ArchitectureAdapterFactory.register_adapter",
     "registers the bilinear Llama bridge adapter"),
    ("transformer_lens.factories.architecture_adapter_factory", "SUPPORTED_ARCHITECTURES",
     "TransformerLens' own adapters (restored by unregister)"),
    ("transformer_lens.utilities.activation_functions", "SUPPORTED_ACTIVATIONS",
     "the activation-name registry ('bilinear'/'linear' = identity)"),
    ("transformer_lens.model_bridge.supported_architectures.llama", "LlamaArchitectureAdapter",
     "the base of the bilinear Llama adapter"),
    ("transformer_lens.model_bridge.generalized_components.gated_mlp", "GatedMLPBridge",
     "the base of BilinearMLPBridge"),
)
"""The public TransformerLens names the plugin builds on; verified like the patch targets."""

# ------------------------------------------------------------------------------- state

_APPLIED: List[Tuple[Any, str, Any]] = []  # (owner, name, original) of applied patches
_ADAPTERS: List[str] = []  # architectures whose bridge adapter register() replaced
_REGISTERED = False


def _resolve(patch: Patch) -> Tuple[Any, str, Any]:
    """``(owner, name, raw original)``; :class:`RegistrationError` when the target is gone."""
    return _resolve_target(patch.module, patch.attribute, patch.why, "patch")


def _resolve_target(module: str, attribute: str, why: str, verb: str = "use") -> Tuple[Any, str, Any]:
    version = transformer_lens_version()
    try:
        owner = importlib.import_module(module)
        *path, name = attribute.split(".")
        for part in path:
            owner = getattr(owner, part)
        original = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
    except (ImportError, AttributeError, KeyError) as err:
        raise RegistrationError(
            f"bilinear-lens cannot {verb} {module}:{attribute} ({why}): it is missing in TransformerLens "
            f"{version} ({type(err).__name__}: {err}). This TransformerLens version moved it; install "
            "transformer-lens 3.9 (default) or 4.x (bridge only), or report it to bilinear-lens."
        ) from err
    return owner, name, original


def applicable_patches() -> List[Patch]:
    """The entries of :data:`PATCHES` that apply to the installed TransformerLens/SAELens."""
    return [p for p in PATCHES if p.applies()]


def _apply(patch: Patch, resolved: Tuple[Any, str, Any]) -> None:
    owner, name, original = resolved
    if any(o is owner and n == name for o, n, _ in _APPLIED):
        return
    _APPLIED.append((owner, name, original))
    setattr(owner, name, patch.wrap(original))


def _apply_when_imported(patch: Patch) -> None:
    """Resolve and apply ``patch`` once its module is imported (now, if it already is)."""
    def apply() -> None:
        if _REGISTERED:
            _apply(patch, _resolve(patch))

    after_import(patch.module, apply)


def is_registered() -> bool:
    return _REGISTERED


def register() -> None:
    """Install the adapter, the activations and every applicable patch (idempotent, all or nothing)."""
    global _REGISTERED
    if _REGISTERED:
        return
    for module, attribute, why in EXTENSION_POINTS:  # verify everything before changing anything
        _resolve_target(module, attribute, why)
    patches = applicable_patches()
    later = [p for p in patches if p.needs == "hooked_sae"]  # SAELens: when it is imported
    resolved = [(patch, _resolve(patch)) for patch in patches if patch not in later]
    from transformer_lens.factories.architecture_adapter_factory import ArchitectureAdapterFactory
    from transformer_lens.utilities.activation_functions import SUPPORTED_ACTIVATIONS

    from bilinear_lens.bridge.adapter import BilinearLlamaArchitectureAdapter

    for name in BILINEAR_ACT_FNS:
        SUPPORTED_ACTIVATIONS[name] = _identity
    for architecture in ADAPTER_ARCHITECTURES:
        ArchitectureAdapterFactory.register_adapter(architecture, BilinearLlamaArchitectureAdapter)
        _ADAPTERS.append(architecture)
    for patch, target in resolved:
        _apply(patch, target)
    _REGISTERED = True
    for patch in later:
        _apply_when_imported(patch)


def unregister() -> None:
    """Undo :func:`register`: restore every wrapped attribute and adapter, drop the activations."""
    global _REGISTERED
    cancel_all()
    while _APPLIED:
        owner, name, original = _APPLIED.pop()
        setattr(owner, name, original)
    if _ADAPTERS:
        from transformer_lens.factories.architecture_adapter_factory import (
            SUPPORTED_ARCHITECTURES,
            ArchitectureAdapterFactory,
        )

        while _ADAPTERS:  # back to TransformerLens' own adapter for the name
            architecture = _ADAPTERS.pop()
            ArchitectureAdapterFactory.register_adapter(architecture, SUPPORTED_ARCHITECTURES[architecture])
    from transformer_lens.utilities.activation_functions import SUPPORTED_ACTIVATIONS

    for name in BILINEAR_ACT_FNS:
        SUPPORTED_ACTIVATIONS.pop(name, None)
    _REGISTERED = False


def entry_point_installed() -> bool:
    """True when this installation declares the ``transformer_lens.architectures`` entry point."""
    return any(ep.name == ENTRY_POINT_NAME and ep.value.startswith("bilinear_lens")
               for ep in metadata.entry_points(group=ENTRY_POINT_GROUP))


def describe() -> str:
    """One line per table entry: target, applies or not, why (for docs and bug reports)."""
    lines = [f"TransformerLens {transformer_lens_version()}"]
    for p in PATCHES:
        lines.append(f"{'applied' if p.applies() else 'n/a    '}  {p.target}  ({p.needs}): {p.why}")
    return "\n".join(lines)


register()  # importing this module registers too
