"""Per-dataset defaults of ``bilinear-lens mnist`` (no torch import: the command line reads them
to build ``--help`` before any heavy module is loaded)."""

from __future__ import annotations

from typing import Any, Dict

DATASET_DEFAULTS: Dict[str, Dict[str, Any]] = {
    # 10k real digits (8k/2k): small data, so light regularisation and a short run (< 2 min on 2 cores).
    "mnist": dict(d_hidden=256, epochs=10, batch_size=100, lr=3e-3, input_noise=0.2, latent_noise=0.0,
                  weight_decay=0.1),
    # The paper's Fashion-MNIST settings (notes §1.3): d 512, input noise 0.4, weight decay 0.5, batch 2048
    # (P2); batch 2048 also gives more seed-consistent eigenvectors than 256 (docs/image.md).
    "fashion-mnist": dict(d_hidden=512, epochs=20, batch_size=2048, lr=1e-3, input_noise=0.4, latent_noise=0.0,
                          weight_decay=0.5),
}
HUB_PREFIX = "hf:"
"""``--data hf:OWNER/NAME`` loads a Hugging Face hub dataset; any other string is a local path
(except the two default hub names below, accepted as they are)."""
HUB_NAMES = {"mnist": "ylecun/mnist", "fashion-mnist": "zalando-datasets/fashion_mnist"}

__all__ = ["DATASET_DEFAULTS", "HUB_NAMES", "HUB_PREFIX"]
