"""train-sae and compare end to end on a tiny bilinear model with a tiny tokenizer (a few SAE steps)."""

from __future__ import annotations

import json
import random

import pytest
import torch

from bilinear_lens.cli import main

WORDS = ("the cat dog sun ran saw big red ball park mom said happy sad play tree bird sky went "
         "little girl boy named lily tom".split())


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A saved tiny bilinear model with its tokenizer, a text file, and SAEs trained by the CLI."""
    from transformer_lens import HookedTransformer

    from bilinear_lens import save_pretrained
    from bilinear_lens.language.tokenizer import train_tokenizer_from_texts
    from tests.conftest import tiny_cfg

    root = tmp_path_factory.mktemp("sae_cli")
    rng = random.Random(0)
    stories = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 60))) + "." for _ in range(120)]
    data = root / "stories.txt"
    data.write_text("".join(s + "\n<|endoftext|>\n" for s in stories), encoding="utf-8")
    tok = train_tokenizer_from_texts(stories, vocab_size=300)
    torch.manual_seed(0)
    model = HookedTransformer(tiny_cfg(d_vocab=len(tok))).eval()
    save_pretrained(model, root / "model", tokenizer=tok)
    common = ["--model", str(root / "model"), "--layer", "1", "--data", str(data), "--training-tokens", "2048",
              "--context-size", "32", "--batch-size-tokens", "256", "--eval-rows", "8", "--k", "4", "--expansion", "2"]
    for side in ("in", "out"):
        assert main(["train-sae", *common, "--hook", side, "--out", str(root / f"sae_{side}")]) == 0
    return root, data


def test_train_sae_writes_saelens_folder_with_evals(setup):
    from sae_lens import SAE

    root, _ = setup
    for side, hook in (("in", "blocks.1.mlp.hook_in"), ("out", "blocks.1.hook_mlp_out")):
        folder = root / f"sae_{side}"
        sae = SAE.load_from_disk(str(folder))
        assert sae.cfg.d_in == 32 and sae.cfg.d_sae == 64 and sae.cfg.metadata.hook_name == hook
        assert sae.cfg.architecture() == "topk" and sae.cfg.k == 4
        evals = json.loads((folder / "evals.json").read_text())
        assert 0 < evals["l0"] <= 4
        assert evals["explained_variance"] is not None and evals["explained_variance"] <= 1
        assert evals["ce_loss_recovered"] is not None and evals["ce_loss_clean"] > 0
        assert evals["training"]["training_tokens"] == 2048
        assert not (root / f"sae_{side}.checkpoints").exists()  # removed once the SAE is saved


def test_compare_writes_metrics_and_report(setup):
    root, data = setup
    out = root / "report"
    rc = main(["compare", "--model", str(root / "model"), "--layer", "1", "--sae-in", str(root / "sae_in"),
               "--sae-out", str(root / "sae_out"), "--data", str(data), "--out", str(out), "--rows", "24",
               "--context", "32", "--ks", "1,2,4,32", "--n-show", "1"])
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    assert {"lowrank_correlation", "interactions", "matching", "side_by_side", "sae"} <= set(m)
    lr = m["lowrank_correlation"]
    assert lr["k"] == [1, 2, 4, 32] and len(lr["mean"]) == 4 and len(lr["frac_above_0.75"]) == 4
    assert lr["n_features"] > 0
    assert abs(lr["mean"][-1] - 1) < 1e-3  # k = d_model: the quadratic form is exact
    assert m["sae"]["in"]["hook_name"] == "blocks.1.mlp.hook_in" and "l0" in m["sae"]["out"]
    assert m["side_by_side"][0]["eigenvectors"] and len(m["interactions"]["features"]) == 1
    page = (out / "index.html").read_text()
    for png in ("lowrank_curve.png", "lowrank_hist.png", "matching.png", m["interactions"]["features"][0]["figure"]):
        assert (out / png).stat().st_size > 1000 and png in page
    assert "Low-rank approximation" in page and "Side by side" in page


def test_compare_rejects_swapped_saes(setup, capsys):
    root, data = setup
    rc = main(["compare", "--model", str(root / "model"), "--layer", "1", "--sae-in", str(root / "sae_out"),
               "--sae-out", str(root / "sae_in"), "--data", str(data), "--out", str(root / "bad"), "--rows", "4"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "blocks.1.hook_mlp_out" in err and "needs 'blocks.1.mlp.hook_in'" in err
    assert not (root / "bad").exists()


def test_train_sae_rejects_unknown_layer(setup, capsys):
    root, data = setup
    rc = main(["train-sae", "--model", str(root / "model"), "--layer", "5", "--hook", "in", "--data", str(data),
               "--out", str(root / "nope"), "--training-tokens", "512", "--batch-size-tokens", "256", "--context-size", "32",
               "--eval-rows", "2"])
    assert rc == 1
    assert "--layer must be in [0, 1], got 5" in capsys.readouterr().err
    assert not (root / "nope").exists()


def test_compare_refuses_saes_of_another_model(setup, tmp_path, capsys):
    """An SAE is checked against the model it was trained on (recorded by train-sae), not its width."""
    import shutil

    from transformer_lens import HookedTransformer

    from bilinear_lens import save_pretrained
    from bilinear_lens.language.tokenizer import load_tokenizer
    from tests.conftest import tiny_cfg

    root, data = setup
    tok = load_tokenizer(root / "model")
    other = HookedTransformer(tiny_cfg(d_vocab=len(tok))).eval()  # the same shape ...
    with torch.no_grad():
        other.blocks[0].mlp.W_in.add_(0.01)  # ... other weights
    save_pretrained(other, tmp_path / "other", tokenizer=tok)
    args = ["compare", "--layer", "1", "--sae-in", str(root / "sae_in"), "--sae-out", str(root / "sae_out"),
            "--data", str(data), "--rows", "4", "--context", "32"]
    assert main([*args, "--model", str(tmp_path / "other"), "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "--sae-in" in errors[0] and "was trained on another model" in errors[0]
    assert not (tmp_path / "r").exists()
    plain = tmp_path / "plain"  # an SAELens folder without train-sae's record
    shutil.copytree(root / "sae_in", plain)
    (plain / "run.json").unlink()
    args[4] = str(plain)
    assert main([*args, "--model", str(root / "model"), "--out", str(tmp_path / "r2")]) == 1
    assert "holds no record of the model it was trained on" in capsys.readouterr().err


def test_model_that_is_a_file_is_named(setup, tmp_path, capsys):
    root, data = setup
    f = root / "model" / "config.json"
    for cmd in (["train-sae", "--hook", "in", "--out", str(tmp_path / "a")],
                ["compare", "--sae-in", "x", "--sae-out", "y", "--out", str(tmp_path / "b")]):
        assert main([*cmd, "--model", str(f), "--layer", "0", "--data", str(data)]) == 1
        assert "is a file, not a model folder" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
