"""TinyStories end to end: eigenvector features of a bilinear transformer next to SAE features.

    python demos/tinystories_sae_vs_eigen.py --quick --out runs/demo_quick     # ~10 min on 2 cores
    python demos/tinystories_sae_vs_eigen.py --out runs/demo                   # full setting: ~18 min on 2 idle cores

Stages (each is skipped when its output already exists, so an interrupted run resumes; the
language-model runs resume from their last checkpoint):

1. a byte-level BPE tokenizer trained on ``train.txt`` (shared by both models);
2. a bilinear and a SwiGLU transformer of the same shape, trained on the same tokens (``train_lm``);
3. SAELens TopK SAEs on the bilinear model's MLP input (``blocks.L.mlp.hook_in``) and output
   (``blocks.L.hook_mlp_out``), evaluated with SAELens' ``run_evals`` on ``validation.txt``;
4. the comparison (feature interaction matrices, low-rank approximation, eigenvector matching,
   side-by-side contexts) on ``validation.txt``, written to ``OUT/report/`` (a compare run folder:
   ``index.html``, figures) and ``OUT/metrics.json`` (with the timings).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

for var, value in (("HF_HUB_OFFLINE", "1"), ("HF_DATASETS_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"),
                   ("WANDB_MODE", "disabled")):
    os.environ.setdefault(var, value)
warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", category=UserWarning, module="sae_lens")

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BILINEAR_LENS_SHARED", REPO.parent / "shared")) / "data" / "tinystories"

SETTINGS = {
    # quick: ~10 minutes on a shared 2-core CPU (a small model; losses are far from the paper's)
    "quick": dict(vocab=1024, d_model=64, n_layers=2, n_heads=4, n_ctx=64, lm_tokens=400_000,
                  lm_batch=32, lr=5e-3, layer=1, sae_tokens=200_000, sae_batch=1024, k=8, expansion=4,
                  sae_lr=1e-3, rows=96, eval_rows=32),
    # full: ~18 minutes on 2 idle cores (measured: 17.7 min; see docs/sae.md)
    "full": dict(vocab=4096, d_model=128, n_layers=2, n_heads=4, n_ctx=128, lm_tokens=2_000_000,
                 lm_batch=32, lr=3e-3, layer=1, sae_tokens=1_000_000, sae_batch=2048, k=16, expansion=4,
                 sae_lr=5e-4, rows=128, eval_rows=64),
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small setting (~10 minutes on 2 cores)")
    ap.add_argument("--out", required=True, help="output folder (re-run to resume)")
    ap.add_argument("--data", default=str(DATA), help="folder with train.txt and validation.txt")
    ap.add_argument("--lm-tokens", type=int, default=None, help="override: LM training tokens")
    ap.add_argument("--sae-tokens", type=int, default=None, help="override: SAE training tokens")
    args = ap.parse_args(argv)
    s = dict(SETTINGS["quick" if args.quick else "full"])
    if args.lm_tokens:
        s["lm_tokens"] = args.lm_tokens
    if args.sae_tokens:
        s["sae_tokens"] = args.sae_tokens
    train_txt, val_txt = Path(args.data) / "train.txt", Path(args.data) / "validation.txt"
    for f in (train_txt, val_txt):
        if not f.is_file():
            raise SystemExit(f"missing {f}: pass --data (a folder with train.txt and validation.txt).")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    timings = {}

    import torch

    import bilinear_lens  # noqa: F401  (registers the plugin)
    from bilinear_lens.language.tokenizer import train_tokenizer
    from bilinear_lens.language.config import LMTrainConfig
    from bilinear_lens.language.train import train_lm
    from bilinear_lens.loading import load_model_and_tokenizer
    from bilinear_lens.sae.config import CompareConfig, SAETrainConfig
    from bilinear_lens.sae.pipeline import run_compare, sae_info
    from bilinear_lens.sae.train import train_sae
    from bilinear_lens.text.tokens import text_blocks

    torch.set_num_threads(1)  # one thread: two ran ~10x slower on a busy 2-core machine (9 min vs 53 s)

    # 1. tokenizer
    tok_dir = out / "tokenizer"
    if not (tok_dir / "tokenizer.json").is_file():
        log(f"training a {s['vocab']}-token byte-level BPE tokenizer on {train_txt.name}")
        train_tokenizer([train_txt], s["vocab"], out_dir=tok_dir)
    timings["tokenizer_s"] = time.time() - t0

    # 2. language models: same shape, same tokens, bilinear vs SwiGLU
    lm = {}
    for mlp in ("bilinear", "swiglu"):
        t = time.time()
        log(f"training the {mlp} language model ({s['lm_tokens']:,} tokens)")
        lm[mlp] = train_lm(LMTrainConfig.flat(
            data=str(train_txt), val_data=str(val_txt), out=str(out / f"lm-{mlp}"), mlp=mlp,
            d_model=s["d_model"], n_layers=s["n_layers"], n_heads=s["n_heads"], n_ctx=s["n_ctx"],
            tokenizer=str(tok_dir), lr=s["lr"], batch_size=s["lm_batch"], tokens=s["lm_tokens"],
            final_eval_tokens=131_072, resume=True))
        timings[f"lm_{mlp}_s"] = time.time() - t
        log(f"{mlp}: validation loss {lm[mlp]['val_loss']:.4f}")

    # 3. SAEs on the bilinear model's layer L input and output
    model, tokenizer = load_model_and_tokenizer(lm["bilinear"]["model_dir"])
    L = s["layer"]
    ctx = s["n_ctx"]
    train_rows = -(-s["sae_tokens"] // ctx)
    sae_train = text_blocks(str(train_txt), tokenizer, ctx, max_rows=min(train_rows, 20_000))
    sae_eval = text_blocks(str(val_txt), tokenizer, ctx, max_rows=s["eval_rows"], skip_rows=s["rows"])
    for side in ("in", "out"):
        folder = out / f"sae-{side}"
        if (folder / "evals.json").is_file():
            continue
        t = time.time()
        log(f"training the {side}put SAE (TopK k={s['k']}, x{s['expansion']}, {s['sae_tokens']:,} tokens)")
        summary = train_sae(model, sae_train, folder, SAETrainConfig(
            layer=L, hook=side, k=s["k"], expansion=s["expansion"], training_tokens=s["sae_tokens"],
            context_size=ctx, batch_size_tokens=s["sae_batch"], lr=s["sae_lr"], eval_batches=max(1, s["eval_rows"] // 16)),
            eval_tokens=sae_eval, model_name=lm["bilinear"]["model_dir"], resume=True)
        timings[f"sae_{side}_s"] = time.time() - t
        log(f"SAE {side}: explained variance {summary['explained_variance']:.3f}, L0 {summary['l0']:.1f}, "
            f"CE loss recovered {summary['ce_loss_recovered']:.3f}")

    # 4. comparison on validation text (rows before the SAE-eval rows)
    t = time.time()
    log("comparing eigenvectors with SAE features")
    from sae_lens import SAE

    sae_in = SAE.load_from_disk(str(out / "sae-in"))
    sae_out = SAE.load_from_disk(str(out / "sae-out"))
    tokens = text_blocks(str(val_txt), tokenizer, ctx, max_rows=s["rows"])
    info = {
        "model": lm["bilinear"]["model_dir"], "data": str(val_txt), "setting": "quick" if args.quick else "full",
        "settings": s, "val_loss": {m: lm[m]["val_loss"] for m in lm},
        "lm": {m: {k: lm[m].get(k) for k in ("n_params", "n_params_non_embedding", "train_tokens", "steps",
                                              "elapsed_s", "val_tokens")} for m in lm},
        **sae_info(out / "sae-in", out / "sae-out"),
    }
    metrics = run_compare(model, sae_in, sae_out, tokens, out / "report", CompareConfig(layer=L),
                          tokenizer=tokenizer, info=info, resume=True)
    timings["compare_s"] = time.time() - t
    timings["total_s"] = time.time() - t0
    metrics["timings"] = timings
    from bilinear_lens.runs import write_json

    write_json(out / "metrics.json", metrics)
    lr = metrics["lowrank_correlation"]
    log(f"done in {timings['total_s'] / 60:.1f} min: {out / 'report' / 'index.html'}")
    print(json.dumps({"val_loss": metrics["val_loss"], "lowrank_correlation": {
        k: lr[k] for k in ("k", "mean", "frac_above_0.75", "n_features")}}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
