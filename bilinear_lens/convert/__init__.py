"""SwiGLU -> bilinear conversion by finetuning with an annealed gate (see docs/convert.md).

``run_convert(ConvertConfig(model=..., data=..., run=RunOptions(out=...)))`` runs (or resumes) one conversion
on the shared training loop (:mod:`bilinear_lens.training`); ``swap_to_annealed`` / ``set_beta`` /
``finalize_bilinear`` / ``convert_to_bilinear`` are the building blocks; ``AnnealedGateMLP`` is the block with
gate ``(2 - beta) g sigmoid(beta g)``.
"""

from bilinear_lens._lazy import lazy_getattr

_LAZY = {
    "AnnealedGateMLP": "bilinear_lens.convert.annealed_mlp", "annealed_gate": "bilinear_lens.convert.annealed_mlp",
    "AnnealConfig": "bilinear_lens.convert.config", "ConvertConfig": "bilinear_lens.convert.config",
    "load_swiglu_model": "bilinear_lens.convert.finetune", "run_convert": "bilinear_lens.convert.finetune",
    **{name: "bilinear_lens.convert.swap" for name in
       ("check_convertible", "convert_to_bilinear", "finalize_bilinear", "set_beta", "swap_to_annealed")},
}
__getattr__ = lazy_getattr(__name__, _LAZY, globals())
__all__ = sorted(_LAZY)
