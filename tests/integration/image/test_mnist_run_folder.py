"""`bilinear-lens mnist` follows the run-folder contract: refusals before any work, user files
byte-for-byte intact, --resume / --overwrite, a bit-identical resume, no pickle ever executed,
non-finite data and losses stopped with one-line errors."""

from __future__ import annotations

import hashlib
import json
import os
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bilinear_lens.cli import main
from bilinear_lens.image.model import BilinearClassifier
from bilinear_lens.runs import RunFolder

TINY = ["--n-train", "200", "--n-test", "100", "--d-hidden", "16", "--epochs", "1", "--batch-size", "50",
        "--no-progress"]


def _tiny(**over: str) -> list:
    args = dict(zip(TINY[0:-1:2], TINY[1:-1:2]))
    args.update({f"--{k.replace('_', '-')}": v for k, v in over.items()})
    return [x for kv in args.items() for x in kv] + ["--no-progress"]


def _tree(folder: Path) -> dict:
    """{relative path: sha256} of every file under ``folder``."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


class _Touch:
    """Unpickling this object creates ``path`` (a stand-in for arbitrary code)."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def _malicious(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": _Touch(marker), "epoch": 1}, path)  # a torch checkpoint whose unpickling runs code


def test_malicious_payload_is_live(tmp_path):
    # the planted files below would create their marker if anything unpickled them
    _malicious(tmp_path / "probe.pt", tmp_path / "probe-ran")
    torch.load(tmp_path / "probe.pt", weights_only=False)
    assert (tmp_path / "probe-ran").exists()


def _npz_with_nan(path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.random((50, 28, 28)).astype(np.float32)
    images[3, 4, 5] = np.nan
    np.savez(path, images=images, labels=rng.integers(0, 10, 50))


@pytest.mark.parametrize("extra, needle", [
    (["--epochs", "0"], "--epochs must be >= 1"),
    (["--lr", "-1"], "--lr must be > 0"),
    (["--lr", "inf"], "--lr must be a finite number"),
    (["--lr", "nan"], "--lr must be a finite number"),
    (["--n-train", "0"], "--n-train must be >= 1"),
    (["--n-train", "-5"], "--n-train must be >= 1"),
    (["--n-test", "-5"], "--n-test must be >= 1"),
    (["--n-train", "100000"], "--n-train must be in [1, 8000]"),
    (["--threads", "-1"], "--threads must be >= 0"),
    (["--d-hidden", "0"], "--d-hidden must be >= 1"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["--n-layers", "0"], "--n-layers must be >= 1"),
    (["--weight-decay", "-1"], "--weight-decay must be >= 0"),
    (["--input-noise", "-0.5"], "--input-noise must be >= 0"),
    (["--seed", "-1"], "--seed must be >= 0"),
    (["--data", "MISSING"], "does not exist"),
    (["--data", "TXT"], "unsupported file type '.txt'"),
    (["--data", "NAN"], "pixels are NaN or inf"),
])
def test_bad_input_is_one_line_and_leaves_nothing(tmp_path, capsys, extra, needle):
    (tmp_path / "notes.txt").write_text("not images")
    _npz_with_nan(tmp_path / "nan.npz")
    subs = {"MISSING": str(tmp_path / "nope"), "TXT": str(tmp_path / "notes.txt"), "NAN": str(tmp_path / "nan.npz")}
    extra = [subs.get(x, x) for x in extra]
    out = tmp_path / "run"
    assert main(["mnist", *TINY, *extra, "--out", str(out)]) == 1
    err = _err(capsys)
    assert needle in err and err.startswith("bilinear-lens mnist: error: ")
    if needle.startswith("pixels"):
        assert "nan.npz" in err
    assert not out.exists()


def test_mistyped_relative_path_is_local_and_fast(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    t0 = time.perf_counter()
    assert main(["mnist", *TINY, "--data", "data/mnist", "--out", "run"]) == 1
    assert time.perf_counter() - t0 < 5  # no hub retry loop
    err = _err(capsys)
    assert "--data data/mnist: the local path does not exist" in err and "hf:OWNER/NAME" in err
    assert sorted(os.listdir(tmp_path)) == ["data"]


def test_foreign_folder_file_and_cwd_are_refused_untouched(tmp_path, monkeypatch, capsys):
    foreign = tmp_path / "site"
    (foreign / "figures").mkdir(parents=True)
    (foreign / "model").mkdir()
    for rel, text in {"index.html": "<p>mine</p>", "metrics.json": "{}", "figures/a.png": "png",
                      "model/config.json": '{"model_type": "llama"}', "checkpoint.pt": "x"}.items():
        (foreign / rel).write_text(text)
    before = _tree(foreign)
    assert main(["mnist", *TINY, "--out", str(foreign)]) == 1
    assert "is not empty and is not a bilinear-lens mnist run" in _err(capsys)
    assert main(["mnist", *TINY, "--overwrite", "--out", str(foreign)]) == 1
    _err(capsys)
    assert _tree(foreign) == before and sorted(os.listdir(foreign)) == sorted(
        ["figures", "model", "index.html", "metrics.json", "checkpoint.pt"])

    file = tmp_path / "report.txt"
    file.write_text("keep me")
    assert main(["mnist", *TINY, "--out", str(file)]) == 1
    assert "is a file" in _err(capsys) and file.read_text() == "keep me"

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for out in (".", str(work / "sub" / ".."), ".."):
        assert main(["mnist", *TINY, "--out", out]) == 1
        assert "current folder or one of its parents" in _err(capsys)
    assert os.listdir(work) == []


def test_same_run_needs_resume_other_settings_need_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["mnist", *TINY, "--out", str(out)]) == 0
    capsys.readouterr()
    finished = _tree(out)
    # the same settings again: refused without --resume, returned as finished (verified) with it
    assert main(["mnist", *TINY, "--out", str(out)]) == 1
    assert "already holds this mnist run; pass --resume" in _err(capsys)
    assert main(["mnist", *TINY, "--resume", "--out", str(out)]) == 0
    first = json.loads((out / "metrics.json").read_text())
    printed = json.loads(capsys.readouterr().out.splitlines()[0])
    assert printed["test_accuracy"] == round(first["test_accuracy"], 4)
    assert _tree(out) == finished
    # a finished run whose files changed is not reported as finished
    weights = out / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    assert main(["mnist", *TINY, "--resume", "--out", str(out)]) == 1
    assert "changed since the run finished" in _err(capsys)
    # other settings: refused, then replaced with --overwrite
    assert main(["mnist", *_tiny(d_hidden="8"), "--out", str(out)]) == 1
    err = _err(capsys)
    assert "holds a different mnist run" in err and "d_hidden: 16 -> 8" in err
    assert main(["mnist", *_tiny(d_hidden="8"), "--overwrite", "--out", str(out)]) == 0
    assert BilinearClassifier.load(out / "model").cfg.d_hidden == 8
    before = _tree(out)
    assert main(["mnist", *TINY, "--resume", "--overwrite", "--out", str(out)]) == 1  # contradictory flags
    assert "--resume and --overwrite contradict each other" in _err(capsys) and _tree(out) == before


def test_interrupted_run_resumes_bit_identically_and_never_unpickles(tmp_path, monkeypatch, capsys):
    args = _tiny(epochs="2")
    ref = tmp_path / "ref"
    assert main(["mnist", *args, "--unregularised", "--out", str(ref)]) == 0

    out = tmp_path / "run"
    original = RunFolder.checkpointed

    def interrupt_after_first_checkpoint(self):
        original(self)
        raise KeyboardInterrupt

    monkeypatch.setattr(RunFolder, "checkpointed", interrupt_after_first_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        main(["mnist", *args, "--unregularised", "--out", str(out)])
    monkeypatch.setattr(RunFolder, "checkpointed", original)
    assert (out / "checkpoint" / "state.safetensors").is_file() and not (out / "model").exists()
    assert json.loads((out / "checkpoint" / "state.json").read_text())["state"]["epoch"] == 1

    # every file the old code unpickled, planted: resuming must never execute any of them
    marker = tmp_path / "code-ran"
    for rel in ("checkpoint.pt", "unregularised/checkpoint.pt", "checkpoint/state.pt"):
        _malicious(out / rel, marker)
    assert main(["mnist", *args, "--unregularised", "--out", str(out)]) == 1
    assert "pass --resume" in _err(capsys)
    assert main(["mnist", *args, "--unregularised", "--resume", "--out", str(out)]) == 0
    assert not marker.exists()
    for name in ("model", "unregularised/model"):
        a, b = BilinearClassifier.load(ref / name), BilinearClassifier.load(out / name)
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not (out / "checkpoint").exists()  # removed once the model is saved
    m_ref, m_out = (json.loads((d / "metrics.json").read_text()) for d in (ref, out))
    assert m_ref["history"] == m_out["history"] and m_ref["truncation"] == m_out["truncation"]


def test_non_finite_loss_stops_naming_the_step_and_keeps_the_checkpoint(tmp_path, monkeypatch, capsys):
    calls = {"n": 0}

    def cross_entropy(logits, labels):
        calls["n"] += 1
        loss = F.cross_entropy(logits, labels)
        return loss * float("nan") if calls["n"] == 6 else loss

    fake = types.SimpleNamespace(cross_entropy=cross_entropy)
    monkeypatch.setattr("bilinear_lens.image.train.F", fake)
    out = tmp_path / "run"
    assert main(["mnist", *_tiny(epochs="2"), "--out", str(out)]) == 1  # 4 steps per epoch: step 6 diverges
    err = _err(capsys)
    assert "training loss is nan at step 6" in err and "the checkpoint of epoch 1 is kept" in err
    state = json.loads((out / "checkpoint" / "state.json").read_text())["state"]
    assert state["epoch"] == 1 and not (out / "model").exists()
    # diverging in the first epoch leaves nothing behind
    fresh = tmp_path / "fresh"

    def always_nan(logits, labels):
        return F.cross_entropy(logits, labels) * float("nan")

    monkeypatch.setattr("bilinear_lens.image.train.F", types.SimpleNamespace(cross_entropy=always_nan))
    assert main(["mnist", *TINY, "--out", str(fresh)]) == 1
    assert "at step 1" in _err(capsys) and not fresh.exists()
