"""Why the daemon is starting: the `reason` of the 2.0.1 BootNotification (B01, B11, B12).

The daemon cannot ask anyone after the fact, so each run leaves traces for the next one:

- a planned restart (the CSMS's Reset, a firmware hand-over) records the reason to give before
  the daemon stops (`record_shutdown(next_reason=...)`);
- every clean stop records itself; a start without that record followed a crash, a kill or the
  watchdog;
- systemd's `ExecStopPost=` writes the unit's `$SERVICE_RESULT` to `last-exit` in the state
  directory (`watchdog` when `WatchdogSec=` killed a hung loop);
- the kernel's boot id tells a power-up (or reboot) from a daemon restart.

1.6 BootNotification has no reason field; only 2.0.1 sends it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

KERNEL_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
EXIT_RECORD = "last-exit"
"""Written by systemd/station.service ExecStopPost: `$SERVICE_RESULT $EXIT_CODE $EXIT_STATUS`."""

NEXT_KEY = "boot:next_reason"
CLEAN_KEY = "boot:clean_shutdown"
KERNEL_KEY = "boot:kernel_boot_id"

REASONS = ("ApplicationReset", "FirmwareUpdate", "LocalReset", "PowerUp", "RemoteReset", "ScheduledReset",
           "Triggered", "Unknown", "Watchdog")


class KeyValueStore(Protocol):
    def get(self, key: str, default: Any = None) -> Any: ...

    def put(self, key: str, value: Any) -> None: ...


def kernel_boot_id(path: Path = KERNEL_BOOT_ID) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def _service_result(state_dir: Path) -> str | None:
    try:
        words = (state_dir / EXIT_RECORD).read_text().split()
    except OSError:
        return None
    return words[0] if words else None


def determine(store: KeyValueStore, state_dir: Path, *, boot_id: str | None) -> str:
    """The reason for this start, from the previous run's traces (read-only; see `record_start`)."""
    planned = store.get(NEXT_KEY)
    if planned in REASONS:
        return str(planned)
    previous_boot = store.get(KERNEL_KEY)
    if previous_boot is None or (boot_id is not None and previous_boot != boot_id):
        return "PowerUp"  # first start on this store, or the computer itself started
    if _service_result(state_dir) == "watchdog":
        return "Watchdog"
    if store.get(CLEAN_KEY) is True:
        return "LocalReset"  # stopped cleanly and restarted by hand (systemctl restart)
    return "ApplicationReset"  # died without a clean stop: crash or kill


def record_start(store: KeyValueStore, state_dir: Path, *, boot_id: str | None) -> None:
    """Forget the previous run's traces; until `record_shutdown`, this run counts as not stopped cleanly."""
    store.put(NEXT_KEY, None)
    store.put(CLEAN_KEY, False)
    store.put(KERNEL_KEY, boot_id or "unknown")
    (state_dir / EXIT_RECORD).unlink(missing_ok=True)


def record_shutdown(store: KeyValueStore, *, next_reason: str | None = None) -> None:
    """A clean stop; `next_reason` when the restart that follows is planned (RemoteReset, FirmwareUpdate)."""
    if next_reason is not None:
        store.put(NEXT_KEY, next_reason)
    store.put(CLEAN_KEY, True)
