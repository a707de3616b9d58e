"""The README's quick start runs as written, and the CI uses the README's test command."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import REPO


def _block(marker: str) -> str:
    text = (REPO / "README.md").read_text()
    section = re.search(rf"<!-- {marker} -->(.*?)<!-- /{marker} -->", text, re.S)
    assert section, f"README.md lacks the <!-- {marker} --> section"
    return re.search(r"```(?:python|bash)\n(.*?)```", section.group(1), re.S).group(1)


def test_quickstart_runs_as_written(tmp_path):
    result = subprocess.run([sys.executable, "-c", _block("quickstart")], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "torch.Size([2, 32, 4, 8])" in result.stdout
    assert (tmp_path / "my-bilinear-model" / "config.json").is_file()


def test_ci_runs_the_readme_test_command():
    command = [line for line in _block("test-command").splitlines() if line.startswith("python -m pytest")]
    assert command, "the README test block must contain the pytest command"
    assert "test-command" in (REPO / ".ci" / "run").read_text()
