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


@pytest.fixture(autouse=True)
def daemon_logs_hold_no_unhandled_errors() -> object:
    """Every test that ran the real daemon (tests/e2e.py) fails on an unretrieved task exception or a
    traceback in the daemon's log (issue 22: every task has an owner that handles its failure)."""
    from tests import e2e

    e2e.started_daemons.clear()
    yield
    daemons, e2e.started_daemons[:] = list(e2e.started_daemons), []
    faults = [f"{d.log_path}: {line}" for d in daemons if not d.faults_allowed and d.log_path.exists()
              for line in e2e.log_faults(d.log())]
    assert not faults, "daemon log holds unhandled errors:\n" + "\n".join(faults)
