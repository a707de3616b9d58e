"""TransformerBridge support: the bilinear MLP component and the Llama adapter that uses it.

``TransformerBridge.boot_transformers(folder)`` on a bilinear Llama folder gives blocks whose
``mlp`` is a :class:`BilinearMLPBridge` (hooks ``hook_in``, ``hook_pre``, ``hook_pre_linear``,
``hook_post``, ``hook_eig``), in raw and in compatibility mode; every decomposition accepts it.
"""

from bilinear_lens.bridge.adapter import BilinearLlamaArchitectureAdapter, bilinear_mlp_bridge
from bilinear_lens.bridge.mlp import BilinearMLPBridge

__all__ = ["BilinearLlamaArchitectureAdapter", "BilinearMLPBridge", "bilinear_mlp_bridge"]

# When importing this package is what imported TransformerLens, registration waited for it (see
# bilinear_lens._on_transformer_lens); it runs now (idempotent otherwise).
from bilinear_lens.registration import register as _register  # noqa: E402

_register()
