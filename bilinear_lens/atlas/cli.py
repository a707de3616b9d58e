"""``bilinear-lens atlas``: the eigenvector atlas of one layer (see docs/atlas.md).

    bilinear-lens atlas --model SRC --layer L --out DIR [--directions vocab|tokens:FILE|sae:DIR|diff:A,B]
        [--k 8] [--data TEXT] [--sae-in DIR] [--device cpu|cuda] [--batch N] [--solver auto|dense|lanczos] [--block 1]
        [--resume|--overwrite] [--no-progress]

``SRC`` is a model folder (``bilinear-lens train-lm``, ``save_pretrained``, a Llama folder, a folder in
the authors' published format) or a name that ``from_pretrained`` / ``boot_transformers`` knows. On
TransformerLens 3.x it is loaded as a HookedTransformer (``load_pretrained``), on 4.x as a
TransformerBridge in compatibility mode (``load_bridge``; the same processing). Several processes:
``torchrun --nproc_per_node N -m bilinear_lens.cli atlas ...`` (or ``accelerate launch``) split the
directions.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Tuple

from bilinear_lens.config import add_arguments, from_args


def load_source(src: str, device: str) -> Tuple[Any, Any]:
    """The model and its tokenizer from a folder or a name: a HookedTransformer on TransformerLens 3.x,
    a TransformerBridge in compatibility mode on 4.x (module docstring)."""
    from bilinear_lens.registration import has_hooked_transformer

    if Path(src).is_file():
        raise ValueError(f"--model {src} is a file; give a model folder or a model name.")
    if not has_hooked_transformer():
        return _load_bridge(src, device)
    if Path(src).is_dir():
        from bilinear_lens.loading import load_model_and_tokenizer as load_model

        return load_model(src)
    from bilinear_lens import load_pretrained

    try:
        model = load_pretrained(src, device=device).eval()
    except Exception as err:  # noqa: BLE001 - report any loader failure in one line
        raise ValueError(f"--model {src}: not a folder, and from_pretrained failed ({_first_line(err)}).") from None
    return model, getattr(model, "tokenizer", None)


def _first_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"


def _load_bridge(src: str, device: str) -> Tuple[Any, Any]:
    from bilinear_lens.bridge.load import load_bridge
    from bilinear_lens.checkpoints.hf_config import CheckpointError

    try:
        model = load_bridge(src, device=device)
    except CheckpointError:
        raise
    except Exception as err:  # noqa: BLE001 - report any loader failure in one line
        what = "a folder" if Path(src).is_dir() else "not a folder"
        raise ValueError(f"--model {src}: {what}, and TransformerBridge.boot_transformers failed "
                         f"({_first_line(err)}).") from None
    return model, model.tokenizer


def _check_layer(model: Any, src: str, layer: int) -> None:
    """A layer out of range, or a model whose layer is not bilinear, as a one-line error naming the flags."""
    from bilinear_lens.decomposition.weights import bilinear_layer

    try:
        bilinear_layer(model, layer)
    except (IndexError, TypeError) as err:
        raise ValueError(f"--model {src} --layer {layer}: {err}") from None


def _run(args: argparse.Namespace) -> int:
    from bilinear_lens.atlas.build import build_atlas
    from bilinear_lens.atlas.config import AtlasCommand
    from bilinear_lens.atlas.directions import check_spec

    cfg = from_args(AtlasCommand, args).check()
    atlas_cfg = cfg.atlas
    if atlas_cfg.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA device is available; use --device cpu.")
    check_spec(atlas_cfg.directions)
    if atlas_cfg.directions.startswith("sae:") or atlas_cfg.sae_in:  # before the model is loaded
        from bilinear_lens.atlas.directions import sae_lens_sae

        sae_lens_sae("--directions sae:DIR" if atlas_cfg.directions.startswith("sae:") else "--sae-in")
    with cfg.run.torch_threads():
        model, tokenizer = load_source(cfg.model, atlas_cfg.device)
        _check_layer(model, cfg.model, cfg.layer)
        atlas = build_atlas(model, cfg.layer, cfg.run.out, tokenizer=tokenizer, resume=cfg.run.resume,
                            overwrite=cfg.run.overwrite, progress=cfg.run.progress, source=cfg.model,
                            **atlas_cfg.to_dict())
    res = atlas.residuals()
    print(json.dumps({"out": str(atlas.root), "directions": len(atlas), "k": atlas.k, "layer": atlas.layer,
                      "max_residual": float(res.max()), "page": str(Path(atlas.root) / "index.html")}, indent=2))
    return 0


def add_commands(sub: Any) -> None:
    from bilinear_lens.atlas.config import AtlasCommand

    p = sub.add_parser("atlas", help="decompose every output direction of a layer; write a browsable atlas",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p, AtlasCommand)
    p.set_defaults(func=_run)
