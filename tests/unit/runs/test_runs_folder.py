"""The run-folder contract (bilinear_lens.runs): refusals, lock, temporaries, overwrite, verify."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bilinear_lens.runs import (RunError, atomic_dir, load_state, open_run, remove_temporaries, save_state,
                                write_json)
from bilinear_lens.runs.folder import OLD_RUN, RUN_FILE


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_fresh_run_writes_run_file_and_resume_needs_flag(tmp_path):
    out = tmp_path / "run"
    with open_run(out, "demo", {"a": 1}) as run:
        assert run.created and not run.resuming
        run.save_state("state", {"step": 3})
    doc = json.loads((out / RUN_FILE).read_text())
    assert doc["kind"] == "demo" and doc["identity"] == {"a": 1}
    with pytest.raises(RunError, match="--resume"):
        open_run(out, "demo", {"a": 1})
    with pytest.raises(RunError, match=r"a: 1 -> 2"):
        open_run(out, "demo", {"a": 2}, resume=True)
    with open_run(out, "demo", {"a": 1}, resume=True) as run:
        assert run.resuming and run.load_state("state") == {"step": 3}


@pytest.mark.parametrize("make", ["file", "foreign", "legacy"])
def test_foreign_targets_refused_untouched(tmp_path, make):
    out = tmp_path / "x"
    if make == "file":
        out.write_text("mine")
        before = out.read_bytes()
    else:
        out.mkdir()
        (out / "notes.txt").write_text("mine")
        if make == "legacy":
            (out / RUN_FILE).write_text(json.dumps({"lr": 1}))
        before = snapshot(out)
    with pytest.raises(RunError) as e:
        open_run(out, "demo", {}, overwrite=True)
    assert "\n" not in str(e.value)
    assert (out.read_bytes() if make == "file" else snapshot(out)) == before
    if make != "file":
        assert sorted(p.name for p in out.iterdir()) == sorted(before)  # no lock file either


@pytest.mark.parametrize("target", [".", "..", "~"])
def test_current_parent_home_refused(tmp_path, monkeypatch, target):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(tmp_path / "a"))
    with pytest.raises(RunError, match="new folder"):
        open_run(target, "demo", {})
    assert list(work.iterdir()) == []


def test_other_kind_refused(tmp_path):
    with open_run(tmp_path / "r", "one", {}):
        pass
    with pytest.raises(RunError, match="holds a bilinear-lens one run"):
        open_run(tmp_path / "r", "two", {}, overwrite=True)


def test_error_before_checkpoint_removes_created_folder(tmp_path):
    out = tmp_path / "new"
    with pytest.raises(ZeroDivisionError):
        with open_run(out, "demo", {}) as run:
            run.write_json("metrics.json", {})
            1 / 0
    assert not out.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ZeroDivisionError):
        with open_run(empty, "demo", {}):
            1 / 0
    assert empty.is_dir() and list(empty.iterdir()) == []


def test_error_after_checkpoint_keeps_run(tmp_path):
    out = tmp_path / "r"
    with pytest.raises(ZeroDivisionError):
        with open_run(out, "demo", {}) as run:
            run.save_state("ckpt", {"w": torch.ones(2)})
            1 / 0
    with open_run(out, "demo", {}, resume=True) as run:
        assert torch.equal(run.load_state("ckpt")["w"], torch.ones(2))


def test_lock_refuses_second_process(tmp_path):
    out = tmp_path / "r"
    with open_run(out, "demo", {}):
        code = ("import sys; from bilinear_lens.runs import open_run, RunError\n"
                "try:\n open_run(sys.argv[1], 'demo', {}, resume=True)\n"
                "except RunError as e:\n print(e); sys.exit(3)\n")
        p = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True)
        assert p.returncode == 3, p.stderr
        assert f"in use by another bilinear-lens process (pid {os.getpid()})" in p.stdout


def test_temporaries_removed_on_open(tmp_path):
    out = tmp_path / "r"
    with open_run(out, "demo", {}) as run:
        run.save_state("s", {"x": 1})
    (out / ".bl-tmp-model-123-ab").mkdir()
    (out / "sub").mkdir()
    (out / "sub" / ".bl-tmp-f-1-2").write_text("half")
    with open_run(out, "demo", {}, resume=True):
        assert not (out / ".bl-tmp-model-123-ab").exists()
        assert not (out / "sub" / ".bl-tmp-f-1-2").exists()


def test_overwrite_keeps_old_run_until_first_checkpoint(tmp_path):
    out = tmp_path / "r"
    with open_run(out, "demo", {"seed": 1}, owned=("model", "metrics.json")) as run:
        run.write_json("metrics.json", {"seed": 1})
        run.finish()
    old = snapshot(out)
    # interrupted (exception) before the first checkpoint: the old run is back, byte for byte
    with pytest.raises(KeyboardInterrupt):
        with open_run(out, "demo", {"seed": 2}, overwrite=True, owned=("model", "metrics.json")) as run:
            run.write_json("metrics.json", {"seed": 2})
            raise KeyboardInterrupt
    assert snapshot(out) == old
    # killed (no clean-up at all) before the first checkpoint: rolled back on the next open
    run = open_run(out, "demo", {"seed": 2}, overwrite=True, owned=("model", "metrics.json"))
    run.write_json("metrics.json", {"seed": 2})
    os.close(run._lock_fd)  # what kill -9 leaves
    with open_run(out, "demo", {"seed": 1}, resume=True) as again:
        assert again.finished
    assert snapshot(out) == old
    # a checkpoint deletes the old run
    with open_run(out, "demo", {"seed": 2}, overwrite=True, owned=("model", "metrics.json")) as run:
        run.save_state("ckpt", {"step": 1})
        assert not (out / OLD_RUN).exists()
    assert json.loads((out / RUN_FILE).read_text())["identity"] == {"seed": 2}


def test_overwrite_refuses_inputs_inside(tmp_path):
    out = tmp_path / "r"
    with open_run(out, "demo", {"a": 1}) as run:
        (out / "tokenizer").mkdir()
        run.checkpointed()
    with pytest.raises(RunError, match="input of this run"):
        open_run(out, "demo", {"a": 2}, overwrite=True, inputs=[out / "tokenizer"])
    assert (out / "tokenizer").is_dir()


def test_finished_run_verified(tmp_path):
    out = tmp_path / "r"
    with open_run(out, "demo", {}) as run:
        run.write_json("metrics.json", {"x": 1})
        run.finish()
    (out / "metrics.json").write_text('{"x": 2}')
    with pytest.raises(RunError, match="changed since the run finished"):
        open_run(out, "demo", {}, resume=True)


def test_resume_and_overwrite_together_refused(tmp_path):
    with pytest.raises(RunError, match="contradict"):
        open_run(tmp_path / "r", "demo", {}, resume=True, overwrite=True)
    assert not (tmp_path / "r").exists()


def test_state_round_trip_bitwise(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95))
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    g = torch.Generator().manual_seed(5)
    obj = {"opt": opt.state_dict(), "gen": g.get_state(), "rng": torch.get_rng_state(), "lr": 0.1 + 0.2,
           "history": [{"loss": float("inf")}], "t": (1, 2)}
    save_state(tmp_path / "s", obj)
    back = load_state(tmp_path / "s")
    assert back["t"] == (1, 2) and back["lr"] == 0.1 + 0.2 and back["history"][0]["loss"] == float("inf")
    assert torch.equal(back["gen"], obj["gen"]) and torch.equal(back["rng"], obj["rng"])
    st = back["opt"]["state"]
    assert set(st) == set(obj["opt"]["state"])  # int keys kept
    opt2 = torch.optim.AdamW(model.parameters(), lr=1e-3)
    opt2.load_state_dict(back["opt"])
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def test_corrupt_state_one_line_error(tmp_path):
    save_state(tmp_path / "s", {"w": torch.ones(3)})
    (tmp_path / "s.safetensors").write_bytes(b"\x80\x04garbage")  # a pickle header: never unpickled
    with pytest.raises(RunError, match="corrupt") as e:
        load_state(tmp_path / "s")
    assert "\n" not in str(e.value)


def test_atomic_dir_failure_leaves_target(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "a").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "a").write_text("new")
            raise RuntimeError
    assert (target / "a").read_text() == "old"
    assert remove_temporaries(tmp_path) == 0
    write_json(tmp_path / "m.json", {"v": torch.tensor(1.5)})
    assert json.loads((tmp_path / "m.json").read_text()) == {"v": 1.5}
