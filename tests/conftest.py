"""Shared fixtures. Real components only: temp SQLite files, loopback servers, ptys."""

from __future__ import annotations

import os
import sys

import pytest

# Tests never read the device's env file.
os.environ.setdefault("STATION_ENV_FILE", os.devnull)


@pytest.fixture
def python() -> str:
    return sys.executable
