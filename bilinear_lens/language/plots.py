"""Figures for language-model runs (matplotlib, Agg backend)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, Union

PathLike = Union[str, Path]


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
        tokens = [r["tokens"] / 1e6 for r in h]
        color = f"C{i}"
        n_eval = m.get("config", {}).get("eval_tokens")
        final = (f"; final {m['val_loss']:.3f} on {m['val_tokens'] // 1000}k tokens"
                 if m.get("val_loss") is not None and m.get("val_tokens") else "")
        sub = f" (first {n_eval // 1000}k tokens{final})" if n_eval else ""
        ax.plot(tokens, [r["val_loss"] for r in h], color=color, label=f"{label} val{sub}")
        ax.plot(tokens, [r["train_loss"] for r in h], color=color, ls="--", alpha=0.6,
                label=f"{label} train (mean since last eval)")
    ax.set_xlabel("training tokens (millions)")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(title or "bilinear vs SwiGLU language models")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return path
