"""Image data for the classifiers: MNIST and Fashion-MNIST from idx ``.gz`` folders, ``.npz`` files,
Hugging Face ``datasets`` hub names, or the real MNIST sample shipped with the package.

Every source ends as an :class:`ImageSplit`: ``train`` / ``test`` :class:`ImageData` with pixels
``float32 [N, 784]`` in [0, 1] and labels ``int64 [N]``.

Sources (``load_data(source, dataset)``):

* ``None`` with ``dataset="mnist"``: the 10,000 real MNIST digits in ``bilinear_lens/data/mnist10k.npz``
  with a fixed 8,000 / 2,000 split (seeded permutation, the same on every machine);
* a folder holding ``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``,
  ``t10k-images-idx3-ubyte[.gz]``, ``t10k-labels-idx1-ubyte[.gz]`` (the standard distribution);
* an ``.npz`` with ``x_train, y_train, x_test, y_test`` or with ``images, labels`` (then the fixed
  80/20 split);
* a Hugging Face hub dataset written ``hf:OWNER/NAME`` (needs network or cache); the two default
  names ``ylecun/mnist`` and ``zalando-datasets/fashion_mnist`` are also accepted without the prefix.

Any other string is a local path: one that does not exist is an error saying so (it is never sent
to the hub, so a mistyped ``data/mnist`` fails at once instead of retrying the network). Pixels
must be finite (a NaN or inf pixel is an error naming the file).
"""

from __future__ import annotations

import gzip
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from bilinear_lens.image.defaults import HUB_NAMES, HUB_PREFIX

MNIST_CLASSES = [str(i) for i in range(10)]
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
DATASETS: Dict[str, Dict[str, object]] = {
    "mnist": {"classes": MNIST_CLASSES, "hub": HUB_NAMES["mnist"]},
    "fashion-mnist": {"classes": FASHION_CLASSES, "hub": HUB_NAMES["fashion-mnist"]},
}
SPLIT_SEED = 0
"""Seed of the fixed permutation that splits single-array sources (``images, labels``)."""
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass
class ImageData:
    """Images as flat float pixels in [0, 1] and integer labels."""

    images: Float[Tensor, "n d_input"]
    labels: Int[Tensor, " n"]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, n: int) -> "ImageData":
        return ImageData(self.images[:n], self.labels[:n])


@dataclass
class ImageSplit:
    train: ImageData
    test: ImageData
    dataset: str
    source: str
    class_names: List[str]
    image_size: int = 28


def packaged_mnist_path() -> Path:
    """Path of the 10k real MNIST digits shipped with the package."""
    return Path(str(resources.files("bilinear_lens").joinpath("data", "mnist10k.npz")))


def _check(images: np.ndarray, labels: np.ndarray, where: str, image_size: int) -> Tuple[Tensor, Tensor]:
    """Validate shapes and convert to ``float32 [N, size*size]`` in [0, 1] and ``int64 [N]``."""
    images, labels = np.asarray(images), np.asarray(labels).reshape(-1)
    if images.ndim == 2 and images.shape[1] == image_size * image_size:
        images = images.reshape(-1, image_size, image_size)
    if images.ndim == 4 and images.shape[-1] == 1:  # [N, H, W, 1]
        images = images[..., 0]
    if images.ndim != 3 or images.shape[1:] != (image_size, image_size):
        raise ValueError(
            f"{where}: images have shape {images.shape}, expected [N, {image_size}, {image_size}] "
            f"({image_size}x{image_size} grayscale, as MNIST / Fashion-MNIST); resize the images first."
        )
    if len(images) != len(labels):
        raise ValueError(
            f"{where}: {len(images)} images but {len(labels)} labels; every image needs exactly one label "
            "(check that the image and label files belong together)."
        )
    x = torch.from_numpy(images.astype(np.float32).reshape(len(images), -1))
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        raise ValueError(f"{where}: {int((~finite).sum())} pixels are NaN or inf; clean the data (every pixel "
                         "must be a finite number in [0, 1] or [0, 255]).")
    if images.dtype == np.uint8 or (x.numel() and x.max() > 1.0):
        x = x / 255.0
    return x.contiguous(), torch.from_numpy(labels.astype(np.int64))


def fixed_split(images: np.ndarray, labels: np.ndarray, n_test: int) -> Tuple[Tuple, Tuple]:
    """Split with a seeded permutation (``SPLIT_SEED``): the same split on every machine."""
    perm = np.random.RandomState(SPLIT_SEED).permutation(len(labels))
    test, train = perm[:n_test], perm[n_test:]
    return (images[train], labels[train]), (images[test], labels[test])


def read_idx(path: Union[str, Path]) -> np.ndarray:
    """Read one idx file (``.gz`` or raw): magic ``0x0801`` labels ``[N]`` or ``0x0803`` images ``[N, H, W]``."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 8 or data[0] != 0 or data[1] != 0 or data[2] != 8:
        raise ValueError(f"{path} is not an idx file of unsigned bytes (bad magic number {data[:4].hex()}).")
    ndim = data[3]
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims))
    if len(data) - offset != expected:
        raise ValueError(f"{path}: header promises {dims} = {expected} bytes but the file holds {len(data) - offset}.")
    return np.frombuffer(data, np.uint8, offset=offset).reshape(dims)


def _find_idx(folder: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx") + ".gz", stem.replace("-idx", ".idx")):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(
        f"{folder} has no {stem}.gz (or {stem}); an idx folder needs "
        + ", ".join(f"{s}.gz" for pair in IDX_FILES.values() for s in pair) + "."
    )


def load_idx_folder(folder: Union[str, Path], image_size: int = 28) -> Dict[str, ImageData]:
    """``{"train", "test"}`` from the four standard idx files in ``folder``."""
    folder = Path(folder)
    out = {}
    for split, (img_stem, lbl_stem) in IDX_FILES.items():
        img_path, lbl_path = _find_idx(folder, img_stem), _find_idx(folder, lbl_stem)
        x, y = _check(read_idx(img_path), read_idx(lbl_path), f"{img_path.name} / {lbl_path.name}", image_size)
        out[split] = ImageData(x, y)
    return out


def load_npz(path: Union[str, Path], image_size: int = 28, n_test: Optional[int] = None) -> Dict[str, ImageData]:
    """``{"train", "test"}`` from an ``.npz``: keys ``x_train, y_train, x_test, y_test``, or
    ``images, labels`` split with :func:`fixed_split` (``n_test`` default: 20%)."""
    path = Path(path)
    with np.load(path) as z:
        keys = set(z.files)
        if {"x_train", "y_train", "x_test", "y_test"} <= keys:
            parts = {"train": (z["x_train"], z["y_train"]), "test": (z["x_test"], z["y_test"])}
        elif {"images", "labels"} <= keys:
            images, labels = z["images"], z["labels"]
            if len(images) != len(labels):
                _check(images, labels, str(path), image_size)  # raises the mismatch error
            n_test = n_test if n_test is not None else len(labels) // 5
            train, test = fixed_split(images, labels, n_test)
            parts = {"train": train, "test": test}
        else:
            raise ValueError(f"{path} holds arrays {sorted(keys)}; expected 'images' and 'labels', or "
                             "'x_train', 'y_train', 'x_test', 'y_test'.")
    return {k: ImageData(*_check(x, y, f"{path} ({k})", image_size)) for k, (x, y) in parts.items()}


def load_hub(name: str, image_size: int = 28) -> Dict[str, ImageData]:
    """``{"train", "test"}`` from a Hugging Face ``datasets`` hub name (columns ``image``, ``label``)."""
    from bilinear_lens.text.sources import load_hub_dataset

    ds = load_hub_dataset(name, fix="Pass --data with a folder of idx .gz files or an .npz file instead.")
    out = {}
    for split in ("train", "test"):
        if split not in ds:
            raise ValueError(f"hub dataset {name!r} has splits {list(ds)}, expected 'train' and 'test'.")
        part = ds[split]
        images = np.stack([np.asarray(im, dtype=np.uint8) for im in part["image"]])
        out[split] = ImageData(*_check(images, np.asarray(part["label"]), f"{name} ({split})", image_size))
    return out


def _load_local(text: str, image_size: int) -> Dict[str, ImageData]:
    """``{"train", "test"}`` from a local idx folder or ``.npz`` file (module docstring)."""
    path = Path(text).expanduser()
    if path.is_dir():
        return load_idx_folder(path, image_size)
    if path.is_file():
        if path.suffix != ".npz":
            raise ValueError(f"--data {path}: unsupported file type {path.suffix or '(none)'!r}; give an .npz "
                             "file or a folder of idx files.")
        try:
            return load_npz(path, image_size)
        except (OSError, EOFError, zipfile.BadZipFile) as err:
            raise ValueError(f"--data {path}: not a readable .npz file ({type(err).__name__}); copy it again "
                             "or pass another file.") from err
    raise FileNotFoundError(
        f"--data {text}: the local path does not exist; pass a folder of idx .gz files or an .npz file "
        f"(a Hugging Face hub dataset is written {HUB_PREFIX}OWNER/NAME, such as {HUB_PREFIX}ylecun/mnist)."
    )


def load_data(source: Optional[Union[str, Path]] = None, dataset: str = "mnist",
              image_size: int = 28) -> ImageSplit:
    """Load a train/test split from ``source`` (see the module docstring); ``dataset`` names the classes."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {sorted(DATASETS)}.")
    classes = list(DATASETS[dataset]["classes"])  # type: ignore[arg-type]
    if source is None:
        if dataset == "mnist":
            path = packaged_mnist_path()
            parts = load_npz(path, image_size, n_test=2000)
            return ImageSplit(parts["train"], parts["test"], dataset, "bilinear_lens/data/mnist10k.npz (8k/2k)",
                              classes, image_size)
        source = str(DATASETS[dataset]["hub"])
    text = str(source)
    if text.startswith(HUB_PREFIX) or text in HUB_NAMES.values():
        name = text[len(HUB_PREFIX):] if text.startswith(HUB_PREFIX) else text
        if not name or not all(name.split("/")):
            raise ValueError(f"--data {text}: a hub dataset is written hf:OWNER/NAME, such as hf:ylecun/mnist.")
        parts = load_hub(name, image_size)
    else:
        parts = _load_local(text, image_size)
    n_classes = len(classes)
    for split, data in parts.items():
        if len(data) and (int(data.labels.min()) < 0 or int(data.labels.max()) >= n_classes):
            raise ValueError(f"{text} ({split}): labels span {int(data.labels.min())}..{int(data.labels.max())}, "
                             f"but {dataset} has {n_classes} classes (0..{n_classes - 1}).")
    return ImageSplit(parts["train"], parts["test"], dataset, text, classes, image_size)
