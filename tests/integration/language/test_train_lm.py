"""train_lm / train-lm on a tiny config (d_model 16, 1 layer, vocab 300, a few KB of text)."""

from __future__ import annotations

import json

import pytest
import torch

from bilinear_lens.language.tokenizer import EOT
from bilinear_lens.language.train import LMTrainConfig, train_lm

STORY = ("Once upon a time, there was a little {a} named {b}. {b} loved to {c} in the park. "
         "One day, {b} saw a big {d}. \"Look!\" said {b}. They were very happy.")
WORDS = [("girl", "Lily", "play", "dog"), ("boy", "Tom", "run", "tree"), ("cat", "Max", "jump", "ball"),
         ("bird", "Sue", "sing", "boat"), ("fox", "Ben", "swim", "cake")]


def write(path, n, offset=0):
    stories = [STORY.format(**dict(zip("abcd", WORDS[(i + offset) % 5]))) for i in range(n)]
    path.write_text("".join(f"{s}\n{EOT}\n" for s in stories), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("lmdata")
    return write(d / "train.txt", 40), write(d / "val.txt", 10, offset=2)


def tiny(files, out, **kw):
    train, val = files
    base = dict(data=str(train), val_data=str(val), out=str(out), d_model=16, n_layers=1,
                n_heads=2, n_ctx=32, vocab_size=300, batch_size=4, tokens=4 * 32 * 12,
                eval_every=4, checkpoint_every=4, threads=1, progress=False, seed=3)
    base.update(kw)
    return LMTrainConfig.flat(**base)


def evaluated(history):
    return [h["step"] for h in history if "val_loss" in h]


@pytest.fixture(scope="module")
def finished(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "lm"
    return out, train_lm(tiny(data, out))


def test_writes_run_folder(finished):
    out, result = finished
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["finished"] and metrics["steps"] == 12 and result["train_tokens"] == 12 * 4 * 32
    assert [h["step"] for h in metrics["history"]] == list(range(1, 13))  # one record a step
    assert evaluated(metrics["history"]) == [4, 8]  # periodic validations; the final one is val_loss
    assert metrics["val_loss"] < metrics["history"][3]["val_loss"] < metrics["history"][0]["train_ce"]
    assert metrics["val_loss"] == pytest.approx(result["val_loss"])
    cfg = json.loads((out / "model" / "config.json").read_text())
    assert cfg["hidden_act"] == "linear" and cfg["hidden_size"] == 16 and cfg["vocab_size"] == 300
    assert not cfg["tie_word_embeddings"]
    assert (out / "model" / "tokenizer.json").is_file() and (out / "checkpoint" / "state.json").is_file()


def test_model_loads_in_transformer_lens_and_transformers(finished, data):
    from transformer_lens import HookedTransformer
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bilinear_lens import BilinearMLP
    from bilinear_lens.text.tokens import blocks_of, load_tokens

    out, result = finished
    tl = HookedTransformer.from_pretrained(str(out / "model"))
    assert isinstance(tl.blocks[0].mlp, BilinearMLP)
    hf = AutoModelForCausalLM.from_pretrained(str(out / "model")).eval()
    tok = AutoTokenizer.from_pretrained(str(out / "model"))
    text = "Once upon a time, there was a little cat named Max."
    ids = tok(text, return_tensors="pt")["input_ids"]
    assert ids[0, 0].item() == tok.bos_token_id  # the saved tokenizer prepends BOS, as in training
    assert torch.equal(tl.to_tokens(text), ids)
    with torch.no_grad():
        lp_tl = tl(ids).log_softmax(-1)
        lp_hf = hf(ids).logits.log_softmax(-1)
    assert (lp_tl - lp_hf).abs().max() < 1e-4
    # the reported val_loss is the loaded model's loss on the validation blocks
    val = blocks_of(load_tokens(data[1], tok), 32)
    with torch.no_grad():
        logits = hf(val).logits
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 300), val[:, 1:].reshape(-1))
    assert loss.item() == pytest.approx(result["val_loss"], abs=1e-4)


def test_resume_matches_uninterrupted(finished, data, tmp_path):
    from safetensors.torch import load_file

    out_full, full = finished
    out = tmp_path / "lm"
    stopped = train_lm(tiny(data, out, stop_after_steps=6))  # 6 is not a checkpoint_every multiple
    assert not stopped["finished"] and stopped["steps"] == 6
    with pytest.raises(ValueError, match="already holds this train-lm run"):
        train_lm(tiny(data, out))
    resumed = train_lm(tiny(data, out, resume=True))
    assert resumed["finished"] and resumed["steps"] == 12
    a, b = load_file(out_full / "model" / "model.safetensors"), load_file(out / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0)
    assert resumed["val_loss"] == pytest.approx(full["val_loss"], abs=1e-6)
    assert evaluated(resumed["history"]) == [4, 8]
    assert [h["train_ce"] for h in resumed["history"]] == [h["train_ce"] for h in full["history"]]
    again = train_lm(tiny(data, out, resume=True))  # a finished run is returned as is
    assert again["val_loss"] == resumed["val_loss"]


def test_refuses_foreign_output_folder(finished, data, tmp_path):
    out, _ = finished
    with pytest.raises(ValueError, match=r"different train-lm run \(.*d_model: 16 -> 32"):
        train_lm(tiny(data, out, d_model=32, resume=True))
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a bilinear-lens train-lm run"):
        train_lm(tiny(data, other, overwrite=True))
    assert (other / "notes.txt").read_text() == "mine"


def test_overwrite_replaces_run(data, tmp_path):
    out = tmp_path / "lm"
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    train_lm(tiny(data, out, tokens=4 * 32 * 2))  # trains with threads=1 ...
    assert torch.get_num_threads() == 2  # ... and restores the caller's setting
    torch.set_num_threads(before)
    result = train_lm(tiny(data, out, mlp="swiglu", tokens=4 * 32 * 2, overwrite=True))
    assert result["mlp"] == "swiglu"
    assert json.loads((out / "model" / "config.json").read_text())["hidden_act"] == "silu"


def test_bad_data_errors(data, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        train_lm(tiny(data, tmp_path / "a", data=str(tmp_path / "missing.txt")))
    assert not (tmp_path / "a").exists()  # nothing written for a bad call
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty"):
        train_lm(tiny(data, tmp_path / "b", val_data=str(empty)))
    with pytest.raises(ValueError, match="not both"):
        train_lm(tiny(data, tmp_path / "c", epochs=1.0))


def test_cli_train_lm(data, tmp_path, capsys):
    from bilinear_lens.cli import main

    train, val = data
    args = ["train-lm", "--data", str(train), "--val-data", str(val), "--out", str(tmp_path / "cli"),
            "--d-model", "16", "--n-layers", "1", "--n-heads", "2", "--n-ctx", "32", "--vocab-size",
            "280", "--batch-size", "4", "--tokens", "256", "--threads", "1", "--no-progress"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["train_tokens"] == 256 and summary["mlp"] == "bilinear"
    bad = list(args)
    bad[2], bad[6] = str(tmp_path / "nope.txt"), str(tmp_path / "cli2")
    assert main(bad) == 1
    assert "does not exist" in capsys.readouterr().err


def test_epochs_and_held_out_validation(data, tmp_path):
    from bilinear_lens.language.tokenizer import load_tokenizer
    from bilinear_lens.text.tokens import blocks_of, load_tokens

    out = tmp_path / "lm"
    result = train_lm(tiny(data, out, val_data=None, tokens=None, epochs=0.5, eval_every=100))
    tok = load_tokenizer(out / "tokenizer")
    n_blocks = len(blocks_of(load_tokens(data[0], tok), 32))
    n_val = int(n_blocks * 0.05)
    assert n_val >= 1 and result["val_blocks"] == n_val and result["train_blocks"] == n_blocks - n_val
    assert result["steps"] == round(0.5 * (n_blocks - n_val) / 4)
    assert evaluated(result["history"]) == [] and len(result["history"]) == result["steps"]  # final only


def test_finished_run_with_a_truncated_model_and_overwrite_of_its_own_tokenizer_refused(finished, data, tmp_path):
    import shutil

    out = tmp_path / "lm"
    shutil.copytree(finished[0], out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match="would delete .*tokenizer, an input of this run") as e:
        train_lm(tiny(data, out, tokenizer=str(out / "tokenizer"), overwrite=True))
    assert "\n" not in str(e.value)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    weights = out / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"model\.safetensors changed since the run finished.*--overwrite") as e:
        train_lm(tiny(data, out, resume=True))
    assert "\n" not in str(e.value)
