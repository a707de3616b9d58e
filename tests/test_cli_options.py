"""Every numeric option of train-lm, convert, train-sae and compare, given an invalid value: exit code
1, one error line naming the option (and its range), and no output folder created."""

from __future__ import annotations

import pytest

from bilinear_lens.cli import main
from tests.run_commands import COMMANDS_BY_NAME, build_inputs, error_lines

BAD = {
    "train-lm": [("--d-model", "0"), ("--layers", "0"), ("--heads", "0"), ("--heads", "3"), ("--d-mlp", "0"),
                 ("--ctx", "1"), ("--ctx", "0"), ("--vocab", "10"), ("--tokens", "0"), ("--epochs", "0"),
                 ("--epochs", "-1"), ("--lr", "0"), ("--lr", "-1"), ("--lr", "inf"), ("--lr", "nan"),
                 ("--batch", "0"), ("--seed", "-1"), ("--eval-every", "0"), ("--checkpoint-every", "0"),
                 ("--threads", "-1")],
    "convert": [("--tokens", "0"), ("--val-stories", "0"), ("--val-max-len", "1"), ("--seq-len", "1"),
                ("--seq-len", "0"), ("--batch-size", "0"), ("--grad-accum", "0"), ("--lr", "0"),
                ("--lr", "inf"), ("--weight-decay", "-1"), ("--warmup", "-5"), ("--min-lr-ratio", "2"),
                ("--anneal-frac", "-0.1"), ("--grad-clip", "-1"), ("--seed", "-1"), ("--first-n-layers", "0"),
                ("--first-n-layers", "99"), ("--train-limit", "0"), ("--eval-every", "-1"),
                ("--checkpoint-every", "0"), ("--threads", "-1"), ("--distill", "1.0"), ("--distill", "-0.5")],
    "train-sae": [("--layer", "-1"), ("--layer", "99"), ("--k", "0"), ("--expansion", "0"), ("--tokens", "0"),
                  ("--tokens", "64"), ("--context", "1"), ("--context", "0"), ("--batch-tokens", "0"),
                  ("--lr", "0"), ("--lr", "nan"), ("--eval-rows", "0"), ("--seed", "-1"), ("--checkpoints", "-1"),
                  ("--threads", "-1")],
    "compare": [("--layer", "-1"), ("--layer", "99"), ("--rows", "0"), ("--context", "0"), ("--context", "1"),
                ("--ks", "0"), ("--ks", "1,x"), ("--feature", "-1"), ("--show", "0"), ("--threads", "-1")],
}
CASES = [(cmd, opt, value) for cmd, rows in BAD.items() for opt, value in rows]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return build_inputs(tmp_path_factory.mktemp("inputs"))


def with_option(argv, option, value):
    argv = list(argv)
    if option == "--epochs":  # --tokens and --epochs exclude each other
        i = argv.index("--tokens")
        del argv[i: i + 2]
    if option in argv:
        argv[argv.index(option) + 1] = value
    else:
        argv += [option, value]
    return argv


@pytest.mark.parametrize("command, option, value", CASES, ids=[f"{c} {o} {v}" for c, o, v in CASES])
def test_invalid_value_is_one_line_naming_the_option(command, option, value, inputs, tmp_path, capsys):
    out = tmp_path / "out"
    argv = with_option(COMMANDS_BY_NAME[command].argv(inputs, out), option, value)
    assert main(argv) == 1
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1, lines
    assert option in lines[0], lines[0]
    assert not out.exists()
