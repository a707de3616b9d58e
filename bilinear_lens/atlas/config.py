"""Settings of the atlas (light: no torch): what is decomposed and read (:class:`AtlasConfig`, the arguments of
:func:`bilinear_lens.atlas.build_atlas`) and the ``atlas`` command's whole settings (:class:`AtlasCommand`, whose
leaf fields are its flags).

Every returned eigenpair of ``Q(u)`` is certified: ``||Q v - lambda v|| <= tol |lambda_1|`` in the full space.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from bilinear_lens.config import Config, RunOptions, nested, option

CERTIFY_TOL = 1e-4
"""Certificate of every stored eigenpair: ``||Q v - lambda v|| <= CERTIFY_TOL * |lambda_1|``."""
SOLVERS = ("auto", "dense", "lanczos")

__all__ = ["AtlasCommand", "AtlasConfig", "CERTIFY_TOL", "SOLVERS"]


@dataclass
class AtlasConfig(Config):
    """What one atlas holds and how it is computed (``build_atlas``'s keyword arguments)."""

    directions: str = option("vocab", "vocab | tokens:FILE | sae:DIR | diff:A,B")
    k: int = option(8, "eigenpairs per direction (by |lambda|)", minimum=1)
    data: Optional[str] = option(None, "text for top contexts (one story per line)")
    rows: int = option(256, "context rows of --data to scan", minimum=1)
    contexts: int = option(5, "top contexts per eigenvector", minimum=1)
    sae_in: Optional[str] = option(None, "SAELens SAE on the MLP input: eigenvector alignment")
    device: str = option("cpu", "cpu | cuda")
    batch: int = option(256, "directions per solver batch", minimum=1)
    shard: Optional[int] = option(None, "directions per shard (default: --batch)", minimum=1)
    top: int = option(10, "tokens / features kept per reading", minimum=1)
    warm: int = option(128, "shared warm-start basis size (0: cold starts)", minimum=0)
    solver: str = option("auto", "auto: dense eigh for narrow layers, else Lanczos (docs/atlas.md)", choices=SOLVERS)
    block: int = option(1, "start vectors per direction on the Lanczos path (2: near-degenerate pairs are not "
                        "missed; slower)", minimum=1)
    ov: bool = option(False, "also decode through each layer-0 head's OV circuit")
    tol: float = option(CERTIFY_TOL, "residual certificate, relative to |lambda_1|", minimum=0,
                        inclusive=(False, True), cli=False)
    ctx: int = option(128, "tokens per context row", minimum=2, cli=False)
    pilot: int = option(128, "directions of the warm-start pilot", minimum=1, cli=False)


@dataclass
class AtlasCommand(Config):
    """``atlas``: the model, the layer, the atlas's settings, the run options."""

    model: Optional[str] = option(None, "model folder or model name (from_pretrained on TransformerLens 3.x, "
                                  "boot_transformers on 4.x)", required=True)
    layer: Optional[int] = option(None, "bilinear layer index", minimum=0, required=True)
    atlas: AtlasConfig = nested(AtlasConfig)
    run: RunOptions = nested(RunOptions, lambda: RunOptions(threads=None), identity=False)
