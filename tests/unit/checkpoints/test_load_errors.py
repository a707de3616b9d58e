"""Loading model folders: one-line errors for missing paths, bad config.json, unsupported
architectures, truncated or non-finite weights; pytorch_model.bin is never unpickled as code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tests.conftest import make_llama_dir
from safetensors.torch import load_file, save_file
from transformer_lens import HookedTransformer

import bilinear_lens
from bilinear_lens import CheckpointError
from bilinear_lens.image.model import BilinearClassifier


def _one_line(err: Exception) -> str:
    text = str(err)
    assert "\n" not in text and len(text) < 400, text  # not TransformerLens' list of official names
    return text


class _Touch:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


@pytest.mark.parametrize("name", ["./no-such-model", "../no/such", "runs/no-such/model", "~/no-such-bl-model",
                                  "ABS", "FILE"])
def test_missing_or_file_path_says_so(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("hello")
    name = {"ABS": str(tmp_path / "gone"), "FILE": "notes.txt"}.get(name, name)
    expected = "is a file, not a model folder" if name == "notes.txt" else "does not exist"
    with pytest.raises(CheckpointError) as info:
        HookedTransformer.from_pretrained(name)
    assert expected in _one_line(info.value)
    with pytest.raises(CheckpointError, match=expected):
        bilinear_lens.load_pretrained(name)


@pytest.fixture
def folder(tmp_path):
    path = tmp_path / "m"
    make_llama_dir(path, tokenizer=False)
    return path


def _edit_config(folder: Path, change) -> None:
    file = folder / "config.json"
    cfg = json.loads(file.read_text())
    file.write_text(json.dumps(change(cfg)))


@pytest.mark.parametrize("change, needle", [
    (lambda c: [1, 2, 3], "holds a JSON list, not an object"),
    (lambda c: "llama", "holds a JSON str, not an object"),
    (lambda c: {k: v for k, v in c.items() if k != "hidden_size"}, "has no 'hidden_size'"),
    (lambda c: {**c, "hidden_size": "32"}, "'hidden_size' must be a positive integer, got '32'"),
    (lambda c: {**c, "num_attention_heads": 0}, "'num_attention_heads' must be a positive integer"),
])
def test_bad_config_names_the_key(folder, change, needle):
    _edit_config(folder, change)
    with pytest.raises(CheckpointError) as info:
        HookedTransformer.from_pretrained(str(folder))
    assert needle in _one_line(info.value)


def test_gpt_neox_is_named_with_what_is_supported(tmp_path):
    from transformers import GPTNeoXConfig

    path = tmp_path / "neox"
    GPTNeoXConfig(hidden_size=32, num_attention_heads=4, num_hidden_layers=2, intermediate_size=64,
                  vocab_size=101, architectures=["GPTNeoXForCausalLM"]).save_pretrained(str(path))
    with pytest.raises(CheckpointError) as info:
        HookedTransformer.from_pretrained(str(path))
    text = _one_line(info.value)
    assert "GPTNeoXForCausalLM cannot be loaded" in text and "LlamaForCausalLM" in text


def test_non_finite_weight_is_named(folder):
    file = folder / "model.safetensors"
    tensors = load_file(str(file))
    tensors["model.layers.1.mlp.up_proj.weight"][3, 2] = float("nan")
    tensors["model.layers.1.mlp.up_proj.weight"][0, 0] = float("inf")
    save_file(tensors, str(file), metadata={"format": "pt"})
    with pytest.raises(ValueError) as info:
        HookedTransformer.from_pretrained(str(folder))
    assert "tensor model.layers.1.mlp.up_proj.weight holds 1 NaN and 1 inf" in _one_line(info.value)


def _to_bin(folder: Path) -> Path:
    tensors = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    torch.save(tensors, folder / "pytorch_model.bin")
    return folder / "pytorch_model.bin"


def test_pytorch_bin_plain_tensors_load_truncated_and_pickled_code_refused(folder, tmp_path):
    ref = HookedTransformer.from_pretrained(str(folder))
    bin_file = _to_bin(folder)
    model = HookedTransformer.from_pretrained(str(folder))
    assert torch.equal(model.W_in, ref.W_in)
    data = bin_file.read_bytes()
    bin_file.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as info:
        HookedTransformer.from_pretrained(str(folder))
    assert "cannot be read as plain tensors" in _one_line(info.value)
    marker = tmp_path / "code-ran"
    torch.save({"model.embed_tokens.weight": _Touch(marker)}, bin_file)
    with pytest.raises(CheckpointError, match="cannot be read as plain tensors"):
        HookedTransformer.from_pretrained(str(folder))
    assert not marker.exists()


@pytest.fixture
def classifier_dir(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "clf"
    BilinearClassifier(d_hidden=8).save(path)
    return path


def test_classifier_truncated_weights(classifier_dir):
    f = classifier_dir / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-40])
    with pytest.raises(ValueError) as info:
        BilinearClassifier.load(classifier_dir)
    assert "model.safetensors cannot be read" in _one_line(info.value)


def test_classifier_non_finite_weight_is_named(classifier_dir):
    f = classifier_dir / "model.safetensors"
    tensors = load_file(str(f))
    tensors["head.weight"][1, 1] = float("-inf")
    save_file(tensors, str(f))
    with pytest.raises(ValueError) as info:
        BilinearClassifier.load(classifier_dir)
    assert "tensor head.weight holds 0 NaN and 1 inf" in _one_line(info.value)


@pytest.mark.parametrize("text, needle", [("[1]", "not a JSON object"), ("{", "not valid JSON"),
                                          ('{"architecture": "BilinearClassifier", "config": {"d_hidden": "x"}}',
                                           "invalid classifier config"),
                                          ('{"architecture": "Other", "config": {}}', "not a BilinearClassifier")])
def test_classifier_bad_config(classifier_dir, text, needle):
    (classifier_dir / "config.json").write_text(text)
    with pytest.raises(ValueError) as info:
        BilinearClassifier.load(classifier_dir)
    assert needle in _one_line(info.value)


def test_official_names_with_a_slash_still_resolve(tmp_path, monkeypatch):
    import transformer_lens.loading_from_pretrained as loading

    monkeypatch.chdir(tmp_path)
    assert loading.get_official_model_name("EleutherAI/pythia-70m") == "EleutherAI/pythia-70m"
    assert loading.get_official_model_name("gpt2") == "gpt2"
    with pytest.raises(CheckpointError, match="model folder EleutherAI/pythia-70q does not exist"):
        loading.get_official_model_name("EleutherAI/pythia-70q")  # neither official nor a folder
