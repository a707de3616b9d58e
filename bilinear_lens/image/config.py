"""Settings of the image study (light: no torch): one classifier's training (:class:`TrainConfig`), the
``mnist`` command (:class:`StudyConfig`, whose leaf fields are its flags) and a sweep's run
(:class:`SweepOptions`). ``None`` study fields take the dataset's defaults (:mod:`.defaults`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from bilinear_lens.config import Config, RunOptions, nested, option
from bilinear_lens.image.defaults import DATASET_DEFAULTS
from bilinear_lens.runs.errors import RunError

__all__ = ["StudyConfig", "SweepOptions", "TrainConfig"]

PER_DATASET = "default: per --dataset"


@dataclass
class TrainConfig(Config):
    """Optimisation settings of one classifier (its noise settings are in ``ClassifierConfig``)."""

    epochs: int = option(10, "epochs", minimum=1)
    batch_size: int = option(128, "images per step", minimum=1)
    lr: float = option(1e-3, "AdamW learning rate (cosine schedule)", minimum=0, inclusive=(False, True))
    weight_decay: float = option(0.5, "AdamW weight decay", minimum=0)
    warmup_steps: int = option(0, "linear warm-up steps", minimum=0)
    seed: int = option(0, "seed of the initialisation and the data order", minimum=0)


@dataclass
class StudyConfig(Config):
    """Settings of one study; ``None`` fields take the dataset's defaults (``DATASET_DEFAULTS``)."""

    dataset: str = option("mnist", "class names and defaults", choices=tuple(DATASET_DEFAULTS))
    data: Optional[str] = option(None, "a local folder of idx .gz files or an .npz (images/labels or x_train/y_train/"
                                 "x_test/y_test), or a Hugging Face hub dataset written hf:OWNER/NAME (any other "
                                 "string is a local path, so a mistyped path fails at once); default for mnist: the "
                                 "10k real digits shipped with the package (fixed 8k/2k split), for fashion-mnist: "
                                 "zalando-datasets/fashion_mnist (needs network)", path=True)
    epochs: Optional[int] = option(None, PER_DATASET, minimum=1)
    d_hidden: Optional[int] = option(None, f"embedding / bilinear width d ({PER_DATASET})", minimum=1)
    n_layers: int = option(1, "bilinear layers", minimum=1, aliases=("--layers",))
    residual: bool = option(False, "residual connections around the bilinear layers")
    batch_size: Optional[int] = option(None, PER_DATASET, minimum=1)
    lr: Optional[float] = option(None, f"AdamW learning rate, cosine schedule ({PER_DATASET})", minimum=0,
                                 inclusive=(False, True))
    weight_decay: Optional[float] = option(None, PER_DATASET, minimum=0)
    input_noise: Optional[float] = option(None, f"std of Gaussian pixel noise while training ({PER_DATASET})",
                                          minimum=0)
    latent_noise: Optional[float] = option(None, f"s in x + s*x.std()*N(0,1) after each bilinear layer while "
                                           f"training ({PER_DATASET})", minimum=0)
    seed: int = option(0, "seed of the initialisation and the data order", minimum=0)
    n_train: Optional[int] = option(None, "use only the first N training images", minimum=1)
    n_test: Optional[int] = option(None, "use only the first N test images", minimum=1)
    unregularised: bool = option(False, "also train the same model without noise and weight decay and report it "
                                 "alongside")
    run: RunOptions = nested(RunOptions, lambda: RunOptions(out="mnist-study"), identity=False)

    def resolved(self) -> "StudyConfig":
        """The dataset's defaults filled in, every setting checked (one-line errors naming the option)."""
        if self.dataset not in DATASET_DEFAULTS:
            raise RunError(f"--dataset must be one of {sorted(DATASET_DEFAULTS)}, got {self.dataset!r}.")
        filled = {k: v for k, v in DATASET_DEFAULTS[self.dataset].items() if getattr(self, k) is None}
        return self.replace(**filled).check()

    def model_config(self, image_size: int = 28, n_classes: int = 10, regularised: bool = True) -> Any:
        """The ``ClassifierConfig`` of the study's model (``regularised=False``: without noise)."""
        from bilinear_lens.image.model import ClassifierConfig

        return ClassifierConfig(d_hidden=self.d_hidden, n_layers=self.n_layers, n_classes=n_classes,
                                image_size=image_size, residual=self.residual,
                                input_noise=self.input_noise if regularised else 0.0,
                                latent_noise=self.latent_noise if regularised else 0.0)

    def train_config(self, regularised: bool = True) -> TrainConfig:
        """The ``TrainConfig`` of the study's model (``regularised=False``: without weight decay)."""
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                           weight_decay=self.weight_decay if regularised else 0.0, seed=self.seed)


@dataclass
class SweepOptions(Config):
    """How a sweep is run (not what it computes): data source, size, run options (default ``--out``:
    ``mnist-sweep-<name>``)."""

    data: Optional[str] = option(None, "MNIST data (default: the 10k digits shipped with the package)", path=True)
    quick: bool = option(False, "the small setting (2k training images, 3 epochs, fewer seeds; minutes)")
    run: RunOptions = nested(RunOptions, identity=False)
