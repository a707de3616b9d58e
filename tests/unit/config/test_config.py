"""Configs: one validation style (declared ranges, one-line errors naming the flag), exact dict round trips,
and command lines derived from the fields (the same name in the config, on the command line, in run.json)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import pytest

from bilinear_lens.config import Config, RunOptions, add_arguments, fields_of, from_args, nested, option
from bilinear_lens.runs import RunError


@dataclass
class Inner(Config):
    lr: float = option(1e-3, "learning rate", minimum=0, inclusive=(False, True))
    betas: Tuple[float, float] = option((0.9, 0.95), "betas", cli=False)
    kind: str = option("cosine", "decay", choices=("cosine", "constant"))


@dataclass
class Outer(Config):
    data: Optional[str] = option(None, "data", required=True, path=True)
    n: int = option(3, "count", minimum=1, maximum=10, aliases=("--count",))
    ks: Sequence[int] = option((1, 2), "ks", minimum=1)
    extra: Dict[str, float] = option(default_factory=dict, help="json")
    secret: int = option(5, "not a flag", cli=False)
    inner: Inner = nested(Inner, lambda: Inner(lr=3e-3))
    run: RunOptions = nested(RunOptions, identity=False)

    def _check(self) -> None:
        if self.n > 5 and self.inner.kind == "constant":
            raise RunError("--n above 5 needs --kind cosine.")


def parser_for(cls=Outer, **kw) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    add_arguments(p, cls, **kw)
    return p


def test_round_trip_to_dict_and_from_dict_is_exact():
    cfg = Outer(data="x", n=4, ks=(1, 4), extra={"a": 1.5}, inner=Inner(lr=0.1, betas=(0.8, 0.9)),
                run=RunOptions(out="o", threads=2))
    d = cfg.to_dict()
    assert d["inner"]["betas"] == [0.8, 0.9] and d["ks"] == [1, 4]  # JSON-ready
    assert Outer.from_dict(d) == cfg
    assert Outer.from_dict({"data": "x"}) == Outer(data="x")  # missing fields take their defaults
    with pytest.raises(RunError, match="Outer has no setting 'nn'; known settings: data, extra"):
        Outer.from_dict({"data": "x", "nn": 1})


@pytest.mark.parametrize("change, message", [
    (dict(n=0), "--n must be in [1, 10], got 0."), (dict(n=11), "--n must be in [1, 10], got 11."),
    (dict(n=2.5), "--n must be an integer, got 2.5."), (dict(ks=()), "--ks needs at least one value"),
    (dict(ks=(1, 0)), "--ks must be >= 1, got 0."), (dict(data=None), "--data is required."),
    (dict(inner=Inner(lr=0.0)), "--lr must be > 0, got 0.0."),
    (dict(inner=Inner(lr=float("nan"))), "--lr must be a finite number"),
    (dict(inner=Inner(kind="linear")), "--kind must be one of cosine, constant; got 'linear'."),
    (dict(n=6, inner=Inner(kind="constant")), "--n above 5 needs --kind cosine."),
    (dict(run=RunOptions(out="o", resume=True, overwrite=True)), "--resume and --overwrite contradict"),
    (dict(run=RunOptions(out=None)), "--out is required."),
])
def test_check_names_the_flag_in_one_line(change, message):
    cfg = Outer(data="x", run=RunOptions(out="o")).replace(**change)
    with pytest.raises(RunError) as e:
        cfg.check()
    assert message in str(e.value) and "\n" not in str(e.value)


def test_identity_leaves_out_run_options_and_resolves_existing_paths(tmp_path):
    data = tmp_path / "d.txt"
    data.write_text("x")
    a = Outer(data=str(data), run=RunOptions(out="a", threads=1)).identity()
    b = Outer(data=str(data), run=RunOptions(out="b", threads=4, progress=False)).identity()
    assert a == b and "run" not in a and a["data"] == str(data.resolve())
    assert a["inner"] == {"lr": 3e-3, "betas": [0.9, 0.95], "kind": "cosine"}


def test_every_leaf_field_is_a_flag_of_the_same_name():
    p = parser_for()
    dests = {a.dest for a in p._actions} - {"help"}
    assert dests == set(fields_of(Outer)) - {"secret", "betas"}  # cli=False fields have no flag
    args = p.parse_args(["--data", "x", "--out", "o", "--count", "4", "--ks", "1,2,8", "--lr", "0.5",
                         "--extra", '{"a": 2}', "--no-progress", "--kind", "constant"])
    cfg = from_args(Outer, args).check()
    assert cfg == Outer(data="x", n=4, ks=(1, 2, 8), extra={"a": 2}, inner=Inner(lr=0.5, kind="constant"),
                        run=RunOptions(out="o", progress=False))
    assert from_args(Outer, p.parse_args(["--data", "x", "--out", "o"])) == Outer.flat(data="x", out="o")
    with pytest.raises(SystemExit):  # required flags are required on the command line
        p.parse_args(["--out", "o"])


@pytest.mark.parametrize("argv, message", [
    (["--ks", "1,x"], "--ks must be comma-separated ints, such as 1,2,4; got '1,x'."),
    (["--extra", "[1]"], "--extra must be a JSON object"), (["--extra", "{bad"], "--extra must be a JSON object"),
])
def test_list_and_mapping_flags_fail_in_one_line(argv, message):
    args = parser_for().parse_args(["--data", "x", "--out", "o", *argv])
    with pytest.raises(RunError, match=message.replace("[", r"\[").replace("(", r"\(")):
        from_args(Outer, args)


def test_help_shows_defaults_and_hides_aliases():
    text = parser_for(aliases={"lr": ("--learning-rate",)}).format_help()
    assert "(default: 0.003)" in text and "(default: 1,2)" in text
    assert "--count" not in text and "--learning-rate" not in text
    args = parser_for(aliases={"lr": ("--learning-rate",)}).parse_args(["--data", "x", "--out", "o",
                                                                         "--learning-rate", "0.2"])
    assert from_args(Outer, args).inner.lr == 0.2


def test_flat_and_updated_address_leaf_fields_by_their_flag_names():
    cfg = Outer.flat(data="x", lr=0.2, out="o", threads=3)
    assert (cfg.inner.lr, cfg.run.out, cfg.run.threads, cfg.inner.kind) == (0.2, "o", 3, "cosine")
    other = cfg.updated(kind="constant", resume=True)
    assert (other.inner.kind, other.run.resume, other.inner.lr, cfg.inner.kind) == ("constant", True, 0.2, "cosine")
    assert Outer.flat(data="x", secret=9).secret == 9  # cli=False fields are settable from Python
    with pytest.raises(TypeError, match="Outer has no setting 'lrr'"):
        Outer.flat(data="x", lrr=1)


def test_duplicate_leaf_names_are_refused():
    @dataclass
    class Twice(Config):
        lr: float = option(1.0, "x")
        inner: Inner = nested(Inner)

    with pytest.raises(TypeError, match="two fields are called 'lr'"):
        parser_for(Twice)


def test_run_options_set_and_restore_threads():
    import torch

    before = torch.get_num_threads()
    with RunOptions(out="o", threads=1).torch_threads():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with RunOptions(out="o", threads=0).torch_threads():  # 0: torch's default, untouched
        assert torch.get_num_threads() == before


def test_command_configs_are_light():
    """Every command's settings import without torch, so `bilinear-lens COMMAND --help` is fast."""
    import subprocess
    import sys

    code = ("import sys\nimport bilinear_lens.language.config, bilinear_lens.convert.config, bilinear_lens.sae.config,"
            " bilinear_lens.image.config, bilinear_lens.language.cli, bilinear_lens.convert.cli, "
            "bilinear_lens.sae.cli, bilinear_lens.image.cli\nprint('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
