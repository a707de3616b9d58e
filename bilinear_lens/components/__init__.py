"""TransformerLens components: one per file."""

from bilinear_lens.components.bilinear_mlp import BILINEAR_ACT_FNS, BilinearMLP, is_bilinear_act_fn

__all__ = ["BILINEAR_ACT_FNS", "BilinearMLP", "is_bilinear_act_fn"]
