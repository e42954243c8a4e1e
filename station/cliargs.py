"""Argument checks shared by the `station` commands and tools: a bad value is one line and exit 2 (usage),
said before anything starts, never a traceback from deep inside (an OverflowError for a port, a
FileNotFoundError for a device link in a missing directory)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import NoReturn

from station import exitcodes


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `station dev-csms: argument --port: ... (see station dev-csms --help)`."""

    def error(self, message: str) -> NoReturn:
        self.exit(exitcodes.USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def port(text: str) -> int:
    """A TCP port, 0 (any free one) to 65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number from 0 to 65535, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number from 0 to 65535, got {text}")
    return value


def new_path(text: str) -> Path:
    """A file, link or socket the command creates: its directory must exist (it is not created silently)."""
    path = Path(text)
    parent = path.parent
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(f"directory {parent} does not exist (for {path})")
    return path


def positive(text: str) -> float:
    """A number of seconds (or a factor) above zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {text}")
    return value
