"""Every numeric option of train-lm, convert, train-sae and compare, given an invalid value: exit code
1, one error line naming the option (and its range), and no output folder created."""

from __future__ import annotations

import pytest

from bilinear_lens.cli import main
from tests.run_commands import COMMANDS_BY_NAME, error_lines

BAD = {
    "train-lm": [("--d-model", "0"), ("--n-layers", "0"), ("--n-heads", "0"), ("--n-heads", "3"), ("--d-mlp", "0"),
                 ("--n-ctx", "1"), ("--n-ctx", "0"), ("--vocab-size", "10"), ("--tokens", "0"), ("--epochs", "0"),
                 ("--epochs", "-1"), ("--lr", "0"), ("--lr", "-1"), ("--lr", "inf"), ("--lr", "nan"),
                 ("--batch-size", "0"), ("--seed", "-1"), ("--eval-every", "-1"), ("--checkpoint-every", "0"),
                 ("--threads", "-1"), ("--warmup", "-1"), ("--grad-accum", "0"), ("--min-lr-ratio", "2")],
    "convert": [("--tokens", "0"), ("--val-stories", "0"), ("--val-max-len", "1"), ("--seq-len", "1"),
                ("--seq-len", "0"), ("--batch-size", "0"), ("--grad-accum", "0"), ("--lr", "0"),
                ("--lr", "inf"), ("--weight-decay", "-1"), ("--warmup", "-5"), ("--min-lr-ratio", "2"),
                ("--anneal-frac", "-0.1"), ("--grad-clip", "-1"), ("--seed", "-1"), ("--first-n-layers", "0"),
                ("--first-n-layers", "99"), ("--train-limit", "0"), ("--eval-every", "-1"),
                ("--checkpoint-every", "0"), ("--threads", "-1"), ("--distill", "1.5"), ("--distill", "-0.5")],
    "train-sae": [("--layer", "-1"), ("--layer", "99"), ("--k", "0"), ("--expansion", "0"),
                  ("--training-tokens", "0"), ("--training-tokens", "64"), ("--context-size", "1"),
                  ("--context-size", "0"), ("--batch-size-tokens", "0"), ("--lr", "0"), ("--lr", "nan"),
                  ("--eval-rows", "0"), ("--seed", "-1"), ("--n-checkpoints", "-1"), ("--threads", "-1"),
                  ("--sae-kwargs", "[1]"), ("--sae-kwargs", "{bad")],
    "compare": [("--layer", "-1"), ("--layer", "99"), ("--rows", "0"), ("--context", "0"), ("--context", "1"),
                ("--ks", "0"), ("--ks", "1,x"), ("--feature", "-1"), ("--n-show", "0"), ("--threads", "-1")],
}
CASES = [(cmd, opt, value) for cmd, rows in BAD.items() for opt, value in rows]


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


OLD_NAMES = {"train-lm": [("--layers", "--n-layers"), ("--heads", "--n-heads"), ("--ctx", "--n-ctx"),
                          ("--vocab", "--vocab-size"), ("--batch", "--batch-size")],
             "train-sae": [("--tokens", "--training-tokens"), ("--context", "--context-size"),
                           ("--batch-tokens", "--batch-size-tokens"), ("--checkpoints", "--n-checkpoints")],
             "compare": [("--show", "--n-show")], "mnist": [("--layers", "--n-layers")]}


@pytest.mark.parametrize("command", sorted(OLD_NAMES))
def test_old_flag_names_still_set_the_same_field(command, inputs, tmp_path):
    """Flags are the config's field names; the names of earlier releases are hidden aliases of the same field."""
    import re

    from bilinear_lens.cli import build_parser

    new = COMMANDS_BY_NAME[command].argv(inputs, tmp_path / "out")
    old = list(new)
    for alias, flag in OLD_NAMES[command]:
        if flag in old:
            old[old.index(flag)] = alias
        else:
            old += [alias, "7"]
            new += [flag, "7"]
    parse = lambda argv: vars(build_parser(argv).parse_args(argv))  # noqa: E731
    assert parse(old) == parse(new)
    shown = build_parser(new)._subparsers._group_actions[0].choices[command].format_help()
    assert not [alias for alias, _ in OLD_NAMES[command] if re.search(rf"(?<![\w-]){alias}(?![\w-])", shown)]
