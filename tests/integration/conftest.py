"""Fixtures shared by the integration tests of the commands."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def inputs(tmp_path_factory):
    """The commands' inputs (tests.run_commands.build_inputs), built once; tests only read them."""
    from tests.run_commands import build_inputs

    return build_inputs(tmp_path_factory.mktemp("inputs"))
