"""Bilinear vs SwiGLU TinyStories language models at equal shape and tokens.

    python demos/language_bilinear_vs_swiglu.py --out runs/lm [--quick] [--tokens N]

Trains (or resumes, or reuses finished runs in) ``OUT/bilinear`` and ``OUT/swiglu`` with the
``train-lm`` defaults: the bilinear run trains the byte-level BPE tokenizer, the SwiGLU run
reuses it, so both see exactly the same tokens in the same order. Writes
``OUT/comparison.json`` (``val_loss`` per MLP, the gap, tokens, parameters) and
``OUT/val_loss.png``. ``--quick`` trains 200k tokens per model (a few minutes each).
"""

from __future__ import annotations

import argparse
import json
import os
import warnings
from pathlib import Path

for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(var, "1")
os.environ.setdefault("WANDB_MODE", "disabled")
warnings.filterwarnings("ignore", category=DeprecationWarning)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinystories"


def main() -> None:
    from bilinear_lens.language.config import LMTrainConfig
    from bilinear_lens.language.plots import plot_val_loss
    from bilinear_lens.language.train import train_lm
    from bilinear_lens.runs import write_json

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/lm")
    ap.add_argument("--data", default=str(SHARED / "train.txt"))
    ap.add_argument("--val-data", default=str(SHARED / "validation.txt"))
    ap.add_argument("--tokens", type=int, default=None, help="training tokens per model")
    ap.add_argument("--quick", action="store_true", help="200k tokens per model")
    ap.add_argument("--seed", type=int, default=0, help="initialisation and data-order seed")
    args = ap.parse_args()
    out = Path(args.out)
    tokens = args.tokens or (200_000 if args.quick else None)

    results = {}
    for mlp in ("bilinear", "swiglu"):
        tokenizer = None if mlp == "bilinear" else str(out / "bilinear" / "tokenizer")
        cfg = LMTrainConfig.flat(data=args.data, val_data=args.val_data, out=str(out / mlp), mlp=mlp,
                                 tokens=tokens, tokenizer=tokenizer, seed=args.seed, resume=True)
        results[mlp] = train_lm(cfg)
        print(f"{mlp}: val_loss {results[mlp]['val_loss']:.4f} after {results[mlp]['train_tokens']:,} tokens")
    b, s = results["bilinear"], results["swiglu"]
    summary = {
        "val_loss": {"bilinear": b["val_loss"], "swiglu": s["val_loss"]},
        "gap_bilinear_minus_swiglu": b["val_loss"] - s["val_loss"],
        "seed": args.seed, "train_tokens": b["train_tokens"], "val_tokens": b["val_tokens"],
        "n_params": b["n_params"], "n_params_non_embedding": b["n_params_non_embedding"],
        "tokens_per_second": {"bilinear": b["tokens_per_second"], "swiglu": s["tokens_per_second"]},
        "paper": {"bilinear": 1.337, "swiglu": 1.321, "note": "6 layers, d_model 512, ~30M params, 5 epochs"},
    }
    write_json(out / "comparison.json", summary)
    plot_val_loss({"bilinear": out / "bilinear", "SwiGLU": out / "swiglu"}, out / "val_loss.png",
                  title=f"TinyStories, {b['n_params'] / 1e6:.1f}M params, {b['train_tokens'] / 1e6:.1f}M tokens")
    print(json.dumps(summary, indent=2))
    print(f"wrote {out / 'comparison.json'} and {out / 'val_loss.png'}")


if __name__ == "__main__":
    main()
