"""stories260k (SwiGLU) -> bilinear on TinyStories, against the equal-token SiLU baseline.

Runs the default ``bilinear-lens convert`` command twice per token budget (bilinear, then
``--baseline``; same data, schedule, loss and seed) and prints validation losses (nats/token, first 200 validation stories,
each alone with BOS, cut to 512 tokens) and the gap bilinear - baseline. Runs resume when
interrupted (re-run the same command).

    python benchmarks/convert_stories260k.py --tokens 2000000 --root runs/convert
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bilinear_lens.cli import main as cli

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
# The converter's defaults are its best measured recipe (docs/convert.md, "Which settings matter"):
# distillation 0.9, lr 3e-3, 32 x 256 tokens per step, warm-up 10, beta annealed over the first 10 %.
RECIPE = ["--checkpoint-every", "25"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, nargs="+", default=[2_000_000])
    ap.add_argument("--root", default="runs/convert")
    ap.add_argument("--threads", default="1")
    args = ap.parse_args()
    rows = []
    for tokens in args.tokens:
        res = {}
        for mode in ("bilinear", "baseline"):
            out = Path(args.root) / f"{mode}-{tokens // 1_000_000}M"
            argv = ["convert", "--model", str(SHARED / "models" / "stories260k"),
                    "--data", str(SHARED / "data" / "tinystories" / "train.txt"), "--tokens", str(tokens),
                    "--out", str(out), "--threads", args.threads, *RECIPE]
            if mode == "baseline":
                argv.append("--baseline")
            if (out / "run.json").exists() and not (out / "metrics.json").exists():
                argv.append("--resume")
            if not (out / "metrics.json").exists():
                assert cli(argv) == 0
            res[mode] = json.loads((out / "metrics.json").read_text())
        b, s = res["bilinear"], res["baseline"]
        rows.append((tokens, b["val_loss_original"], b["val_loss_start"], b["val_loss_final"],
                     s["val_loss_final"], b["val_loss_final"] - s["val_loss_final"]))
    print("| tokens | original | bilinear, before finetuning | bilinear final | baseline final | gap |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r[0]:,} | {r[1]:.4f} | {r[2]:.4f} | {r[3]:.4f} | {r[4]:.4f} | {r[5]:+.4f} |")


if __name__ == "__main__":
    main()
