"""The TransformerBridge adapter for Llama folders: stock Llama, with :class:`BilinearMLPBridge` for bilinear ones.

Registered with TransformerLens' public extension points (see :mod:`bilinear_lens.registration`):

* ``ArchitectureAdapterFactory.register_adapter("LlamaForCausalLM", BilinearLlamaArchitectureAdapter)``
  when ``bilinear_lens`` is imported, because bilinear checkpoints are plain ``LlamaForCausalLM``
  folders with ``"hidden_act": "linear"``;
* the entry point ``BilinearLlamaForCausalLM`` in the group ``transformer_lens.architectures``
  (``pyproject.toml``). TransformerLens loads entry points the first time it selects an adapter,
  which imports ``bilinear_lens`` and so performs the registration above: ``boot_transformers(folder)``
  picks this adapter even in a process that never imports ``bilinear_lens``.

For any other ``act_fn`` (SwiGLU Llama) the component mapping is exactly the stock
``LlamaArchitectureAdapter``'s; only the MLP of a bilinear model (``act_fn`` ``"linear"`` or
``"bilinear"``) becomes a :class:`BilinearMLPBridge` over the same ``gate_proj``/``up_proj``/``down_proj``.
"""

from __future__ import annotations

from typing import Any

from transformer_lens.model_bridge.generalized_components import LinearBridge
from transformer_lens.model_bridge.supported_architectures.llama import LlamaArchitectureAdapter

from bilinear_lens.bridge.mlp import BilinearMLPBridge
from bilinear_lens.components.act_fns import is_bilinear_act_fn


def bilinear_mlp_bridge(cfg: Any, name: str = "mlp", gate: str = "gate_proj", up: str = "up_proj",
                        down: str = "down_proj") -> BilinearMLPBridge:
    """A :class:`BilinearMLPBridge` over the Hugging Face projections ``gate``/``up``/``down``."""
    return BilinearMLPBridge(name=name, config=cfg, submodules={
        "gate": LinearBridge(name=gate), "in": LinearBridge(name=up), "out": LinearBridge(name=down)})


class BilinearLlamaArchitectureAdapter(LlamaArchitectureAdapter):
    """``LlamaArchitectureAdapter`` whose MLP is a :class:`BilinearMLPBridge` when ``act_fn`` is bilinear."""

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        if is_bilinear_act_fn(getattr(cfg, "act_fn", None)):
            blocks = self.component_mapping["blocks"]
            blocks.submodules["mlp"] = bilinear_mlp_bridge(self.cfg)
