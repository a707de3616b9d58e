"""Figures for language-model runs (matplotlib, Agg backend)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Union

from bilinear_lens.reports.figures import save_figure

PathLike = Union[str, Path]

__all__ = ["plot_val_loss"]


def plot_val_loss(runs: Dict[str, PathLike], path: PathLike, title: str = "") -> Path:
    """Validation (solid) and training (dashed) loss against training tokens, one colour per run.

    ``runs``: label -> run folder (or its ``metrics.json``). Written atomically to ``path`` (PNG).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
    for i, (label, run) in enumerate(runs.items()):
        file = Path(run) / "metrics.json" if Path(run).is_dir() else Path(run)
        m = json.loads(file.read_text())
        h = m["history"]
        color = f"C{i}"
        n_eval = m.get("config", {}).get("eval_tokens")
        final = (f"; final {m['val_loss']:.3f} on {m['val_tokens'] // 1000}k tokens"
                 if m.get("val_loss") is not None and m.get("val_tokens") else "")
        sub = f" (first {n_eval // 1000}k tokens{final})" if n_eval else ""
        evals = [r for r in h if "val_loss" in r]
        ax.plot([r["tokens"] / 1e6 for r in evals], [r["val_loss"] for r in evals], color=color, marker=".",
                label=f"{label} val{sub}")
        if m.get("val_loss") is not None and h:
            ax.plot([h[-1]["tokens"] / 1e6], [m["val_loss"]], color=color, marker="*", ms=9, ls="none")
        window = max(1, len(h) // 50)  # the per-step training loss, averaged over windows of steps
        train = [h[j: j + window] for j in range(0, len(h), window)]
        ax.plot([w[-1]["tokens"] / 1e6 for w in train], [sum(r["train_ce"] for r in w) / len(w) for w in train],
                color=color, ls="--", alpha=0.6, label=f"{label} train (mean of {window} steps)")
    ax.set_xlabel("training tokens (millions)")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(title or "bilinear vs SwiGLU language models")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110, tight=False)
