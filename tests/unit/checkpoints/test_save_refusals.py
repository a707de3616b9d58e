"""save_pretrained and BilinearClassifier.save never delete what they did not write: a file, a
non-empty foreign folder, a saved model without overwrite=True, files added to a saved model."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
from transformer_lens import HookedTransformer

from bilinear_lens import CheckpointError, save_pretrained
from bilinear_lens.checkpoints import MODEL_MARKER
from bilinear_lens.image.model import BilinearClassifier
from tests.conftest import tiny_cfg


def _tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(params=["llama", "classifier"])
def saver(request, tiny_bilinear):
    """``(save(path, **kw), model)`` for either kind of model folder."""
    if request.param == "llama":
        model = tiny_bilinear

        def save(path, **kw):
            return save_pretrained(model, path, **kw)
    else:
        torch.manual_seed(0)
        model = BilinearClassifier(d_hidden=8)

        def save(path, **kw):
            return model.save(path, **kw)
    return save, model


def test_file_target_is_refused_and_kept(tmp_path, saver):
    save, _ = saver
    f = tmp_path / "notes.txt"
    f.write_bytes(b"my notes\n")
    with pytest.raises(CheckpointError, match="is a file, not a folder"):
        save(f)
    with pytest.raises(CheckpointError, match="is a file, not a folder"):
        save(f, overwrite=True)
    assert f.read_bytes() == b"my notes\n" and sorted(os.listdir(tmp_path)) == ["notes.txt"]


def test_foreign_folder_is_refused_byte_for_byte(tmp_path, saver):
    save, _ = saver
    folder = tmp_path / "mine"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))  # someone's model
    (folder / "model.safetensors").write_bytes(b"\x00" * 64)
    (folder / "sub" / "data.bin").write_bytes(os.urandom(256))
    before = _tree(folder)
    for overwrite in (False, True):
        with pytest.raises(CheckpointError, match="not a model folder written by bilinear-lens"):
            save(folder, overwrite=overwrite)
    assert _tree(folder) == before and sorted(os.listdir(tmp_path)) == ["mine"]  # no temporaries left


def test_own_folder_needs_overwrite_and_keeps_added_files(tmp_path, saver):
    save, model = saver
    folder = tmp_path / "m"
    folder.mkdir()  # an empty folder is fine
    save(folder)
    assert (folder / MODEL_MARKER).is_file()
    first = _tree(folder)
    with pytest.raises(CheckpointError, match="pass overwrite=True"):
        save(folder)
    assert _tree(folder) == first
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    save(folder, overwrite=True)
    assert _tree(folder) != first and sorted(os.listdir(tmp_path)) == ["m"]
    # a file the user added to the saved model is never deleted, even with overwrite=True
    (folder / "README.md").write_text("my notes on this model")
    before = _tree(folder)
    with pytest.raises(CheckpointError, match="did not write.*README.md"):
        save(folder, overwrite=True)
    assert _tree(folder) == before


def test_current_folder_is_refused(tmp_path, monkeypatch, saver):
    save, _ = saver
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match="current folder"):
        save(".", overwrite=True)
    assert os.listdir(tmp_path) == []


def test_inexpressible_model_touches_nothing(tmp_path):
    model = HookedTransformer(tiny_cfg(normalization_type="LN", positional_embedding_type="standard", final_rms=False))
    with pytest.raises(CheckpointError):
        save_pretrained(model, tmp_path / "out")
    assert os.listdir(tmp_path) == []
