"""Figures of every report: a matplotlib figure written atomically (a ``.bl-tmp-*`` sibling, then renamed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Union

from bilinear_lens.runs.atomic import atomic_file

__all__ = ["save_figure"]


def save_figure(fig: Any, path: Union[str, Path], dpi: int = 90, tight: bool = True) -> Path:
    """Save ``fig`` as ``path`` (PNG, ``bbox_inches="tight"`` when ``tight``) atomically, and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        with atomic_file(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png",
                        **({"bbox_inches": "tight"} if tight else {}))
    finally:
        plt.close(fig)
    return path
