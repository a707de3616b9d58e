"""The run-folder contract (bilinear_lens.runs.open_run), checked through every command that writes
(the rows of tests/run_commands.py: train-lm, convert, train-sae, compare, mnist; add a row there for
more).

For each command: a foreign folder, a file, ``.`` and ``..`` as --out are refused; so are a run of
other settings, a second process on the same folder (the lock), and --resume with --overwrite. Each
refusal is one line, exit code 1, and leaves every file byte-for-byte as it was. An interrupted
--overwrite keeps the old run; leftovers of a killed process are removed on --resume, and a finished
run is verified and returned.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bilinear_lens.cli import main
from bilinear_lens.runs import RunFolder
from tests.run_commands import COMMANDS, error_lines, snapshot


@pytest.fixture(scope="module")
def finished(inputs, tmp_path_factory):
    """One finished run per command (made on first use)."""
    runs = {}

    def get(cmd):
        if cmd.name not in runs:
            out = tmp_path_factory.mktemp("finished") / cmd.name
            assert main(cmd.argv(inputs, out)) == 0
            runs[cmd.name] = out
        return runs[cmd.name]

    return get


def refused(argv, capsys, *needles, codes=(1,)):
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's own refusal (a mutually exclusive group): exit code 2
        rc = e.code
    assert rc in codes
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1, lines
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def with_out(cmd, inputs, out):
    return cmd.argv(inputs, Path(out))


@pytest.mark.parametrize("cmd", COMMANDS, ids=str)
def test_foreign_folder_and_file_refused_untouched(cmd, inputs, tmp_path, capsys):
    foreign = tmp_path / "mine"
    (foreign / "figures").mkdir(parents=True)
    (foreign / "notes.txt").write_text("my notes")
    (foreign / "metrics.json").write_text('{"mine": 1}')
    (foreign / "figures" / "a.png").write_bytes(b"\x89PNG mine")
    before = snapshot(foreign)
    for extra in ([], ["--overwrite"], ["--resume"]):
        refused(with_out(cmd, inputs, foreign) + extra, capsys, str(foreign), "not empty")
        assert snapshot(foreign) == before and sorted(os.listdir(foreign)) == ["figures", "metrics.json", "notes.txt"]
    a_file = tmp_path / "file.txt"
    a_file.write_text("mine")
    refused(with_out(cmd, inputs, a_file) + ["--overwrite"], capsys, "is a file")
    assert a_file.read_text() == "mine"


@pytest.mark.parametrize("cmd", COMMANDS, ids=str)
@pytest.mark.parametrize("target", [".", ".."])
def test_current_folder_and_parent_refused(cmd, inputs, tmp_path, monkeypatch, capsys, target):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    (work / "keep.txt").write_text("mine")
    monkeypatch.chdir(work)
    before = snapshot(tmp_path)
    refused(with_out(cmd, inputs, target) + ["--overwrite"], capsys, "current folder or one of its parents")
    assert snapshot(tmp_path) == before and sorted(os.listdir(work)) == ["keep.txt"]


@pytest.mark.parametrize("cmd", COMMANDS, ids=str)
def test_other_settings_lock_and_flag_conflict_refused(cmd, inputs, finished, capsys):
    out = finished(cmd)
    before = snapshot(out)
    refused(with_out(cmd, inputs, out) + cmd.other, capsys, "holds a different")
    refused(with_out(cmd, inputs, out) + cmd.other + ["--resume"], capsys, "holds a different")
    refused(with_out(cmd, inputs, out), capsys, f"already holds this {cmd.kind} run", "--resume")
    # one line, exit 1 ("contradict"), or argparse's mutually exclusive group (mnist): exit 2
    line = refused(with_out(cmd, inputs, out) + ["--resume", "--overwrite"], capsys, codes=(1, 2))
    assert "contradict" in line or "not allowed with argument --resume" in line
    holder = subprocess.Popen(  # another process holding the run folder's lock
        [sys.executable, "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR); "
         "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(120)", str(out / ".bl-lock")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        refused(with_out(cmd, inputs, out) + ["--resume"], capsys, "in use by another bilinear-lens process")
        refused(with_out(cmd, inputs, out) + ["--overwrite"], capsys, "in use by another bilinear-lens process")
    finally:
        holder.kill()
        holder.wait()
    assert snapshot(out) == before


@pytest.mark.parametrize("cmd", COMMANDS, ids=str)
def test_resume_removes_kill_leftovers_and_returns_the_verified_run(cmd, inputs, finished, capsys):
    out = finished(cmd)
    before = snapshot(out)
    (out / ".bl-tmp-checkpoint-4242-abcd1234").mkdir()  # what a process killed with -9 leaves
    (out / ".bl-tmp-checkpoint-4242-abcd1234" / "state.safetensors").write_bytes(b"half")
    (out / ".bl-tmp-metrics.json-4242-0000aaaa").write_text("{")
    assert main(with_out(cmd, inputs, out) + ["--resume"]) == 0
    capsys.readouterr()
    assert not [p for p in os.listdir(out) if p.startswith(".bl-tmp-")]
    assert snapshot(out) == before  # returned as finished: nothing rewritten
    doc = json.loads((out / "run.json").read_text())
    assert doc["kind"] == cmd.kind and doc["finished"]["files"]


@pytest.mark.parametrize("cmd", COMMANDS, ids=str)
def test_finished_run_with_a_changed_file_is_refused(cmd, inputs, finished, tmp_path, capsys):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(finished(cmd), out)
    doc = json.loads((out / "run.json").read_text())
    victim = out / max(doc["finished"]["files"], key=lambda f: doc["finished"]["files"][f][0])  # the largest
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])  # truncated
    before = snapshot(out)
    refused(with_out(cmd, inputs, out) + ["--resume"], capsys, str(victim), "--overwrite")
    assert snapshot(out) == before


@pytest.mark.parametrize("cmd", COMMANDS, ids=str)
def test_interrupted_overwrite_keeps_the_old_run(cmd, inputs, finished, tmp_path, monkeypatch, capsys):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(finished(cmd), out)
    before = snapshot(out)

    def interrupted(self):
        raise KeyboardInterrupt  # Ctrl-C before the new run's first checkpoint

    with monkeypatch.context() as m:
        m.setattr(RunFolder, "checkpointed", interrupted)
        with pytest.raises(KeyboardInterrupt):
            main(with_out(cmd, inputs, out) + cmd.other + ["--overwrite"])
    capsys.readouterr()
    assert snapshot(out) == before  # the old run is back, byte for byte
    assert main(with_out(cmd, inputs, out) + ["--resume"]) == 0  # ... and still verifies as finished
    capsys.readouterr()


@pytest.mark.parametrize("cmd", COMMANDS, ids=str)
def test_overwrite_refuses_inputs_inside_the_folder(cmd, inputs, finished, tmp_path, capsys):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(finished(cmd), out)
    data = inputs[cmd.data]
    shutil.copy(data, out / data.name)  # the data lives inside the run it would replace
    argv = [str(out / data.name) if a == str(data) else a for a in with_out(cmd, inputs, out)]
    before = snapshot(out)
    refused(argv + cmd.other + ["--overwrite"], capsys, "would delete", data.name)
    assert snapshot(out) == before
