"""Image data loading: packaged MNIST, idx folders, npz files, hub names (offline), clear errors."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from bilinear_lens.image.data import load_data, packaged_mnist_path, read_idx


def _write_idx(path, array: np.ndarray, compress: bool = True) -> None:
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 8, array.ndim]) + b"".join(struct.pack(">I", n) for n in array.shape)
    data = header + array.tobytes()
    if compress:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def _idx_folder(tmp_path, n_train=30, n_test=10, size=28, n_labels_train=None):
    rng = np.random.RandomState(0)
    tr = rng.randint(0, 256, (n_train, size, size))
    te = rng.randint(0, 256, (n_test, size, size))
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", tr)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", rng.randint(0, 10, n_labels_train or n_train))
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", te)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", rng.randint(0, 10, n_test), compress=False)
    return tr, te


def test_packaged_mnist_fixed_split():
    split = load_data(None, "mnist")
    assert (len(split.train), len(split.test)) == (8000, 2000)
    assert split.train.images.shape == (8000, 784) and split.train.images.dtype == torch.float32
    assert 0.0 <= float(split.train.images.min()) and float(split.train.images.max()) <= 1.0
    # all ten digits in both parts (the file is sorted by digit, so the split must be shuffled)
    assert set(split.test.labels.tolist()) == set(range(10))
    # deterministic and disjoint: the same split again, and no test image in the training part
    again = load_data(None, "mnist")
    assert torch.equal(again.test.images, split.test.images)
    raw = np.load(packaged_mnist_path())
    assert len(raw["labels"]) == 10000
    train_rows = {bytes(r) for r in (split.train.images * 255).round().to(torch.uint8).numpy()}
    test_rows = [bytes(r) for r in (split.test.images * 255).round().to(torch.uint8).numpy()]
    assert sum(r in train_rows for r in test_rows) < 20  # only genuine duplicate digits, if any


def test_idx_folder_roundtrip(tmp_path):
    tr, te = _idx_folder(tmp_path)
    split = load_data(str(tmp_path), "fashion-mnist")
    assert split.class_names[0] == "T-shirt/top"
    assert torch.allclose(split.train.images, torch.from_numpy(tr.reshape(30, -1) / 255.0).float())
    assert torch.allclose(split.test.images, torch.from_numpy(te.reshape(10, -1) / 255.0).float())
    assert read_idx(tmp_path / "t10k-labels-idx1-ubyte").shape == (10,)


def test_npz_both_layouts(tmp_path):
    rng = np.random.RandomState(1)
    x, y = rng.randint(0, 256, (50, 28, 28)).astype(np.uint8), rng.randint(0, 10, 50)
    np.savez(tmp_path / "a.npz", images=x, labels=y)
    split = load_data(str(tmp_path / "a.npz"))
    assert (len(split.train), len(split.test)) == (40, 10)
    np.savez(tmp_path / "b.npz", x_train=x[:45], y_train=y[:45], x_test=x[45:], y_test=y[45:])
    split = load_data(str(tmp_path / "b.npz"))
    assert (len(split.train), len(split.test)) == (45, 5)
    assert torch.equal(split.test.labels, torch.from_numpy(y[45:]).long())


def test_bad_path_is_clear():
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_data("/no/such/folder", "mnist")


def test_missing_idx_file_is_clear(tmp_path):
    _idx_folder(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte"):
        load_data(str(tmp_path))


def test_wrong_image_size_is_clear(tmp_path):
    _idx_folder(tmp_path, size=32)
    with pytest.raises(ValueError, match=r"32, 32.*expected \[N, 28, 28\]"):
        load_data(str(tmp_path))
    np.savez(tmp_path / "c.npz", images=np.zeros((10, 20, 20), np.uint8), labels=np.zeros(10))
    with pytest.raises(ValueError, match="expected"):
        load_data(str(tmp_path / "c.npz"))


def test_mismatched_label_count_is_clear(tmp_path):
    _idx_folder(tmp_path, n_train=30, n_labels_train=29)
    with pytest.raises(ValueError, match="30 images but 29 labels"):
        load_data(str(tmp_path))
    np.savez(tmp_path / "d.npz", images=np.zeros((10, 28, 28), np.uint8), labels=np.zeros(12))
    with pytest.raises(ValueError, match="10 images but 12 labels"):
        load_data(str(tmp_path / "d.npz"))


def test_labels_out_of_range_and_unknown_dataset(tmp_path):
    np.savez(tmp_path / "e.npz", images=np.zeros((10, 28, 28), np.uint8), labels=np.full(10, 12))
    with pytest.raises(ValueError, match="10 classes"):
        load_data(str(tmp_path / "e.npz"))
    with pytest.raises(ValueError, match="unknown dataset"):
        load_data(None, "cifar")


def test_hub_name_offline_error(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="'zalando-datasets/fashion_mnist' is neither a local file nor a loadable "
                       r"Hugging Face dataset \(offline mode is on.*Pass --data with a folder of idx"):
        load_data(None, "fashion-mnist")
