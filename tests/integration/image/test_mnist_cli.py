"""`bilinear-lens mnist` end to end on a tiny slice of the packaged digits."""

from __future__ import annotations

import json

import torch

from bilinear_lens.cli import main
from bilinear_lens.image.data import load_data
from bilinear_lens.image.model import BilinearClassifier

TINY = ["--n-train", "300", "--n-test", "150", "--d-hidden", "16", "--epochs", "1", "--quiet"]  # --quiet: the old name of --no-progress


def test_cli_writes_report_and_reloadable_model(tmp_path, capsys):
    out = tmp_path / "study"
    assert main(["mnist", *TINY, "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("test_accuracy", "truncation", "dataset", "n_train", "n_test", "config"):
        assert key in metrics
    assert metrics["dataset"] == "mnist" and (metrics["n_train"], metrics["n_test"]) == (300, 150)
    assert metrics["truncation"]["k"] == list(range(17))  # 0..min(30, d)
    assert len(metrics["truncation"]["accuracy"]) == 17
    assert metrics["truncation"]["accuracy"][-1] == metrics["test_accuracy"]  # full spectrum = the model
    for name in ("eigenvectors", "spectra", "truncation", "hosvd"):
        png = out / "figures" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (out / "index.html").read_text()
    for rel in metrics["figures"].values():
        assert f"src='{rel}'" in html and (out / rel).is_file()
    model = BilinearClassifier.load(out / "model")
    test = load_data(None, "mnist").test.subset(150)
    acc = float((model.predict(test.images) == test.labels).float().mean())
    assert acc == metrics["test_accuracy"]
    assert "report:" in capsys.readouterr().out
    # the finished run is returned as is with --resume (identical logits, metrics untouched)
    before, text = model(test.images[:8]), (out / "metrics.json").read_text()
    assert main(["mnist", *TINY, "--resume", "--out", str(out)]) == 0
    assert (out / "metrics.json").read_text() == text
    assert torch.equal(BilinearClassifier.load(out / "model")(test.images[:8]), before)


def test_cli_two_layers_draws_tree(tmp_path):
    out = tmp_path / "deep"
    assert main(["mnist", *TINY, "--n-layers", "2", "--out", str(out)]) == 0
    assert (out / "figures" / "tree.png").is_file()
    assert "tree" in json.loads((out / "metrics.json").read_text())["figures"]


def test_cli_residual_two_layers_runs_without_tree(tmp_path):
    out = tmp_path / "res"
    assert main(["mnist", *TINY, "--n-layers", "2", "--residual", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert "tree" not in metrics["figures"] and metrics["config"]["model"]["residual"] is True


def test_cli_bad_data_path_is_a_clean_error(tmp_path, capsys):
    assert main(["mnist", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 1
    assert "does not exist" in capsys.readouterr().err
