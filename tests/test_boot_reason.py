"""BootNotification's reason names the cause of the start (2.0.1 B01/B11/B12): the rules, then the real daemon."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import pytest

from station import boot_reason
from station.core.store import Store
from station.devtools.csms import DevCsms
from tests.e2e import STATION_ID, DaemonProcess, station_env


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "station.db")


def previous_run(store: Store, state_dir: Path, *, clean: bool, next_reason: str | None = None) -> None:
    boot_reason.record_start(store, state_dir, boot_id="boot-1")
    if clean:
        boot_reason.record_shutdown(store, next_reason=next_reason)


def test_the_first_start_on_a_store_is_a_power_up(store: Store, tmp_path: Path) -> None:
    assert boot_reason.determine(store, tmp_path, boot_id="boot-1") == "PowerUp"


def test_a_new_kernel_boot_id_is_a_power_up_even_after_a_clean_stop(store: Store, tmp_path: Path) -> None:
    previous_run(store, tmp_path, clean=True)
    assert boot_reason.determine(store, tmp_path, boot_id="boot-2") == "PowerUp"


def test_a_planned_restart_gives_the_reason_recorded_before_the_stop(store: Store, tmp_path: Path) -> None:
    previous_run(store, tmp_path, clean=True, next_reason="RemoteReset")
    assert boot_reason.determine(store, tmp_path, boot_id="boot-1") == "RemoteReset"
    boot_reason.record_start(store, tmp_path, boot_id="boot-1")  # used once
    assert boot_reason.determine(store, tmp_path, boot_id="boot-1") == "ApplicationReset"


def test_a_firmware_update_wins_over_a_power_up(store: Store, tmp_path: Path) -> None:
    previous_run(store, tmp_path, clean=True, next_reason="FirmwareUpdate")
    assert boot_reason.determine(store, tmp_path, boot_id="boot-2") == "FirmwareUpdate"


def test_systemd_reporting_the_watchdog_gives_watchdog(store: Store, tmp_path: Path) -> None:
    previous_run(store, tmp_path, clean=False)
    (tmp_path / boot_reason.EXIT_RECORD).write_text("watchdog killed ABRT\n")
    assert boot_reason.determine(store, tmp_path, boot_id="boot-1") == "Watchdog"


def test_a_clean_stop_and_start_in_the_same_boot_is_a_local_reset(store: Store, tmp_path: Path) -> None:
    previous_run(store, tmp_path, clean=True)
    (tmp_path / boot_reason.EXIT_RECORD).write_text("success exited 0\n")
    assert boot_reason.determine(store, tmp_path, boot_id="boot-1") == "LocalReset"


def test_dying_without_a_clean_stop_is_an_application_reset(store: Store, tmp_path: Path) -> None:
    previous_run(store, tmp_path, clean=False)
    (tmp_path / boot_reason.EXIT_RECORD).write_text("signal killed KILL\n")
    assert boot_reason.determine(store, tmp_path, boot_id="boot-1") == "ApplicationReset"


async def test_the_daemon_boots_with_the_reason_of_each_kind_of_restart(tmp_path: Path) -> None:
    async with DevCsms(heartbeat_interval=30) as csms:
        env = station_env(tmp_path, csms, tmp_path / "no-esp32", OCPP_PRIMARY="201")
        state = Path(env["STATION_STATE_DIR"])
        reasons: list[str] = []

        async def boot() -> DaemonProcess:
            since = csms.mark()
            daemon = await DaemonProcess(env, tmp_path / "station.log").start()
            sent = await csms.wait_for("BootNotification", STATION_ID, since=since, timeout=20)
            await csms.wait_for("StatusNotification", STATION_ID, since=since, timeout=20)
            reasons.append(sent.payload["reason"])
            return daemon

        daemon = await boot()
        await csms.call(STATION_ID, "Reset", {"type": "Immediate"})
        assert await asyncio.wait_for(daemon.proc.wait(), 15) == 0  # type: ignore[union-attr]
        daemon._log.close()
        daemon = await boot()
        await daemon.stop(signal.SIGKILL)
        daemon = await boot()
        # systemd's WatchdogSec kills a hung daemon with SIGABRT; ExecStopPost records "watchdog".
        await daemon.stop(signal.SIGABRT)
        (state / boot_reason.EXIT_RECORD).write_text("watchdog killed ABRT\n")
        daemon = await boot()
        assert not (state / boot_reason.EXIT_RECORD).exists()
        await daemon.stop(signal.SIGTERM)  # e.g. `systemctl restart station`
        # The next daemon finds a firmware update handed to the update flow, which restarts it (SIGTERM);
        # tests/test_e2e_firmware.py runs the whole update.
        (state / "firmware").mkdir(exist_ok=True)
        (state / "firmware" / "installing.json").write_text(json.dumps({"request_id": 5, "version": "9.9.9"}))
        daemon = await boot()
        await daemon.stop(signal.SIGTERM)
        daemon = await boot()
        await daemon.stop(signal.SIGTERM)
    assert reasons == ["PowerUp", "RemoteReset", "ApplicationReset", "Watchdog", "LocalReset", "FirmwareUpdate"]
