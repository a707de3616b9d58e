"""Plot conversion runs: training CE (smoothed) and validation loss vs tokens, with beta.

    python demos/convert_plot.py runs/convert/bilinear-2M runs/convert/baseline-2M \\
        --out docs/figures/convert_2M.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bilinear_lens.reports.figures import save_figure  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+", help="output folders of bilinear-lens convert")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax2 = ax.twinx()
    finals = {}
    for run in args.runs:
        m = json.loads((Path(run) / "metrics.json").read_text())
        h = m["history"]
        tok = [r["tokens"] / 1e6 for r in h]
        ce = [r["train_ce"] for r in h]
        k = 9
        smooth = [sum(ce[max(0, i - k): i + 1]) / len(ce[max(0, i - k): i + 1]) for i in range(len(ce))]
        line, = ax.plot(tok, smooth, lw=1, alpha=0.6, label=f"{m['mode']}: train CE (smoothed)")
        vt = [0.0] + [r["tokens"] / 1e6 for r in h if "val_loss" in r] + [m["tokens"] / 1e6]
        vl = [m["val_loss_start"]] + [r["val_loss"] for r in h if "val_loss" in r] + [m["val_loss_final"]]
        ax.plot(vt, vl, "o-", color=line.get_color(), label=f"{m['mode']}: validation")
        finals[m["mode"]] = m["val_loss_final"]
        if m["mode"] == "bilinear":
            ax2.plot(tok, [r["beta"] for r in h], "k:", lw=1, label="beta (right axis)")
            ax.annotate(f"plain swap: {m['val_loss_start']:.2f} (off the chart)", xy=(0, 1.0), xycoords="axes fraction",
                        xytext=(6, -12), textcoords="offset points", fontsize=7, color=line.get_color())
        orig = m["val_loss_original"]
    ax.axhline(orig, color="gray", lw=0.8, ls="--", label=f"original SwiGLU ({orig:.3f})")
    ax.set_ylim(orig - 0.1, orig + 0.6)
    ax.set_xlabel("training tokens (M)")
    ax.set_ylabel("loss (nats/token)")
    ax2.set_ylabel("beta")
    ax2.set_ylim(0, 1.05)
    lines, labels = ax.get_legend_handles_labels()
    lines2, labels2 = ax2.get_legend_handles_labels()
    ax.legend(lines + lines2, labels + labels2, fontsize=7, loc="upper right")
    title = "stories260k: SwiGLU -> bilinear by annealing the gate"
    if {"bilinear", "baseline"} <= finals.keys():
        title += f"\nfinal validation gap {finals['bilinear'] - finals['baseline']:+.3f} nats"
    ax.set_title(title, fontsize=10)
    print(save_figure(fig, args.out, dpi=110))


if __name__ == "__main__":
    main()
