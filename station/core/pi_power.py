"""The Raspberry Pi's own supply and throttling flags, as its firmware reports them.

The firmware's `get_throttled` word (the same as `vcgencmd get_throttled`) is exposed by the
kernel at THROTTLED_PATH on Raspberry Pi OS; the daemon reads that file (no subprocess) and
`station --once` asks vcgencmd. Bits 0-3 are "now", bits 16-19 "has occurred since boot".
"""

from __future__ import annotations

from pathlib import Path

THROTTLED_PATH = Path("/sys/devices/platform/soc/soc:firmware/get_throttled")

THROTTLE_BITS = {
    0: "under-voltage now", 1: "ARM frequency capped now", 2: "throttled now", 3: "soft temperature limit now",
    16: "under-voltage has occurred", 17: "frequency capping has occurred", 18: "throttling has occurred",
    19: "soft temperature limit has occurred",
}
UNDERVOLTAGE_NOW = 1 << 0
THROTTLED_NOW = (1 << 1) | (1 << 2) | (1 << 3)


def describe(value: int, mask: int = ~0) -> list[str]:
    """The flags set in `value` (within `mask`), in words."""
    return [text for bit, text in THROTTLE_BITS.items() if value & mask & (1 << bit)]


def read_throttled(path: Path = THROTTLED_PATH) -> int | None:
    """The current flags word, or None where the kernel does not report it (not a Pi, old kernel)."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    try:
        return int(text, 16)
    except ValueError:
        return None
