"""The command line: listing the commands imports no heavy module, and OS errors of any command
become one-line errors (exit code 1)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import types

import pytest

from bilinear_lens import cli

HEAVY = ("torch", "transformer_lens", "transformers", "sae_lens", "numpy")


def _imports_after(code: str) -> list:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    probe = f"import sys\n{code}\nprint('HEAVY:' + ','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True)
    line = [x for x in out.stdout.splitlines() if x.startswith("HEAVY:")][-1]
    return [m for m in line[len("HEAVY:"):].split(",") if m]


def test_help_and_mnist_help_import_nothing_heavy():
    assert _imports_after("import bilinear_lens") == []
    assert _imports_after("from bilinear_lens.cli import build_parser\nbuild_parser(['--help']).format_help()") == []
    code = "from bilinear_lens.cli import build_parser\np = build_parser(['mnist', '--help'])\n" \
           "assert '--resume' in p._subparsers._group_actions[0].choices['mnist'].format_help()"
    assert _imports_after(code) == []


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_every_command_help_imports_nothing_heavy(command):
    """Options come from light config modules; torch and the models load only when a command runs."""
    code = (f"from bilinear_lens.cli import build_parser\np = build_parser(['{command}', '--help'])\n"
            f"assert '--out' in p._subparsers._group_actions[0].choices['{command}'].format_help()")
    assert _imports_after(code) == []


def test_plugin_still_registers_when_transformer_lens_is_imported():
    code = "import bilinear_lens\nfrom transformer_lens import HookedTransformer\n" \
           "from bilinear_lens.registration import is_registered\nassert is_registered()"
    assert "transformer_lens" in _imports_after(code)


def test_every_command_is_listed_without_importing_it():
    text = cli.build_parser([]).format_help()
    for name in cli.COMMANDS:
        assert name in text


@pytest.mark.parametrize("err, needle", [
    (OSError(errno.EROFS, "Read-only file system", "/mnt/ro/run"), "cannot write /mnt/ro/run: read-only filesystem"),
    (PermissionError(errno.EACCES, "Permission denied", "/root/x"), "cannot write /root/x: permission denied"),
    (OSError(errno.ENOSPC, "No space left on device"), "cannot write OUTDIR: no space left"),
])
def test_os_errors_are_one_line(monkeypatch, capsys, err, needle):
    def add_commands(sub):
        p = sub.add_parser("fake")
        p.add_argument("--out", default="OUTDIR")
        p.set_defaults(func=lambda args: (_ for _ in ()).throw(err))

    monkeypatch.setitem(sys.modules, "fake_cli", types.SimpleNamespace(add_commands=add_commands))
    monkeypatch.setitem(cli.COMMANDS, "fake", ("fake_cli", "a fake command"))
    assert cli.main(["fake"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bilinear-lens fake: error: ") and needle in lines[0]


def test_mnist_read_only_out_is_one_line(tmp_path, monkeypatch, capsys):
    import bilinear_lens.image.study as study

    def read_only(out, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(out))

    monkeypatch.setattr(study, "open_run", read_only)
    out = tmp_path / "ro"
    assert cli.main(["mnist", "--n-train", "50", "--n-test", "20", "--d-hidden", "4", "--epochs", "1",
                     "--no-progress", "--out", str(out)]) == 1
    assert f"cannot write {out}: read-only filesystem" in capsys.readouterr().err
