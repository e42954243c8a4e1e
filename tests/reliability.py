"""Figures the reliability tests report (printed as a table at the end of the run, see conftest)."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

SOAK = os.environ.get("STATION_SOAK") == "1"
"""Long variants: set by `make soak` (the slow tests also check `--runslow` through the marker)."""


@dataclass
class Figures:
    trials: int = 0
    faults: int = 0
    events_checked: int = 0
    lost: int = 0
    duplicated: int = 0
    """Events the CSMS would count twice: a second, different message for a (transaction, seqNo)
    already received, or a second Started/Ended. Each one also fails its test."""
    resent: int = 0
    """Identical retransmissions (delivery is at least once; a CSMS deduplicates on transaction id
    and seqNo). A copy that differs from the first fails the test instead of being counted here."""
    crashes: int = 0
    forgotten: int = 0
    """Requests the station answered Accepted and then neither completed nor reported failed (power-cut soak)."""
    failed_restarts: int = 0
    lockouts: int = 0
    """Logins the CSMS refused because the station came back with credentials it had replaced."""


RESULTS: dict[str, Figures] = {}


def record(name: str, **counts: int) -> Figures:
    """Add counts under `name` (a test area); returns the running totals."""
    figures = RESULTS.setdefault(name, Figures())
    for key, value in counts.items():
        setattr(figures, key, getattr(figures, key) + int(value))
    return figures


def summary_lines() -> list[str]:
    if not RESULTS:
        return []
    names = [f.name for f in fields(Figures)]
    width = max(len(n) for n in RESULTS) + 2
    header = "area".ljust(width) + "".join(n.replace("_", " ").rjust(16) for n in names)
    rows = [header, "-" * len(header)]
    for area, figures in sorted(RESULTS.items()):
        rows.append(area.ljust(width) + "".join(str(getattr(figures, n)).rjust(16) for n in names))
    return rows
