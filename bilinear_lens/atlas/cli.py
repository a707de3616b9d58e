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


def _run(args: argparse.Namespace) -> int:
    from bilinear_lens.atlas.build import build_atlas
    from bilinear_lens.atlas.directions import check_spec
    from bilinear_lens.runs import check_resume_overwrite

    check_resume_overwrite(args.resume, args.overwrite)
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA device is available; use --device cpu.")
    check_spec(args.directions)
    if args.directions.startswith("sae:") or args.sae_in:  # before the model is loaded
        from bilinear_lens.atlas.directions import sae_lens_sae

        sae_lens_sae("--directions sae:DIR" if args.directions.startswith("sae:") else "--sae-in")
    model, tokenizer = load_source(args.model, args.device)
    atlas = build_atlas(model, args.layer, args.out, args.directions, k=args.k, data=args.data,
                        sae_in=args.sae_in, device=args.device, batch=args.batch, shard=args.shard,
                        top=args.top, contexts=args.contexts, rows=args.rows, warm=args.warm, ov=args.ov,
                        solver=args.solver, block=args.block,
                        tokenizer=tokenizer, resume=args.resume, overwrite=args.overwrite,
                        progress=not args.no_progress, source=args.model)
    res = atlas.residuals()
    print(json.dumps({"out": str(atlas.root), "directions": len(atlas), "k": atlas.k, "layer": atlas.layer,
                      "max_residual": float(res.max()), "page": str(Path(atlas.root) / "index.html")}, indent=2))
    return 0


def add_commands(sub: Any) -> None:
    p = sub.add_parser("atlas", help="decompose every output direction of a layer; write a browsable atlas",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model folder or model name (from_pretrained on TransformerLens 3.x, boot_transformers on 4.x)")
    p.add_argument("--layer", type=int, required=True, help="bilinear layer index")
    p.add_argument("--out", required=True, help="atlas folder (run folder)")
    p.add_argument("--directions", default="vocab", help="vocab | tokens:FILE | sae:DIR | diff:A,B")
    p.add_argument("--k", type=int, default=8, help="eigenpairs per direction (by |lambda|)")
    p.add_argument("--data", default=None, help="text for top contexts (one story per line)")
    p.add_argument("--rows", type=int, default=256, help="context rows of --data to scan")
    p.add_argument("--contexts", type=int, default=5, help="top contexts per eigenvector")
    p.add_argument("--sae-in", default=None, help="SAELens SAE on the MLP input: eigenvector alignment")
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.add_argument("--batch", type=int, default=256, help="directions per solver batch")
    p.add_argument("--shard", type=int, default=None, help="directions per shard (default: --batch)")
    p.add_argument("--top", type=int, default=10, help="tokens / features kept per reading")
    p.add_argument("--warm", type=int, default=128, help="shared warm-start basis size (0: cold starts)")
    p.add_argument("--solver", default="auto", choices=["auto", "dense", "lanczos"],
                   help="auto: dense eigh for narrow layers, else Lanczos (docs/atlas.md)")
    p.add_argument("--block", type=int, default=1, help="start vectors per direction on the Lanczos path "
                   "(2: near-degenerate pairs are not missed; slower)")
    p.add_argument("--ov", action="store_true", help="also decode through each layer-0 head's OV circuit")
    p.add_argument("--resume", action="store_true", help="continue an interrupted atlas in --out")
    p.add_argument("--overwrite", action="store_true", help="replace the atlas in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)
