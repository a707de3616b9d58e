"""TransformerBridge support: the bilinear MLP component and the Llama adapter that uses it.

``TransformerBridge.boot_transformers(folder)`` on a bilinear Llama folder gives blocks whose
``mlp`` is a :class:`BilinearMLPBridge` (hooks ``hook_in``, ``hook_pre``, ``hook_pre_linear``,
``hook_post``, ``hook_eig``), in raw and in compatibility mode; every decomposition accepts it.
Folders in the authors' published format boot too (:mod:`bilinear_lens.bridge.published`), and
:func:`load_bridge` is the bridge counterpart of ``load_pretrained``.
"""

from bilinear_lens.bridge.adapter import BilinearLlamaArchitectureAdapter, bilinear_mlp_bridge
from bilinear_lens.bridge.load import load_bridge
from bilinear_lens.bridge.mlp import BilinearMLPBridge

__all__ = ["BilinearLlamaArchitectureAdapter", "BilinearMLPBridge", "bilinear_mlp_bridge", "load_bridge"]

# When importing this package is what imported TransformerLens, registration waited for it (see
# bilinear_lens._on_transformer_lens); it runs now (idempotent otherwise).
from bilinear_lens.registration import register as _register  # noqa: E402

_register()
