"""Shared fixtures. Real components only: temp SQLite files, loopback servers, ptys."""

from __future__ import annotations

import os
import sys

import pytest

# Tests never read the device's env file.
os.environ.setdefault("STATION_ENV_FILE", os.devnull)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False,
                     help="run the long (soak) variants marked @pytest.mark.slow")


def soak_enabled(config: pytest.Config) -> bool:
    """Long variants run under `make soak` (--runslow or STATION_SOAK=1), never in `make test`."""
    return bool(config.getoption("--runslow")) or os.environ.get("STATION_SOAK") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if soak_enabled(config):
        return
    skip = pytest.mark.skip(reason="soak variant: run with --runslow or STATION_SOAK=1 (make soak)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from tests.reliability import summary_lines

    lines = summary_lines()
    if lines:
        terminalreporter.section("reliability summary")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture
def python() -> str:
    return sys.executable
