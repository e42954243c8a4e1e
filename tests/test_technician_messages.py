"""`station status` and `station --once` say what is wrong in the station's terms, where, since when, and what to
check first; they count waiting messages by kind, name the URL a refusal came from, and do not call a meter that
just went quiet healthy."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from station import exitcodes
from station.core.clock import Clock
from station.core.station import StationCore
from station.core.store import Store
from station.devtools.csms import DevCsms
from station.devtools.demo import free_port
from station.ocpp.connection import LinkParams, OcppLink, endpoint_url
from station.once import _exit_code, _queue_check, _stored_queue, meter_check
from tests.e2e import station_cli
from tests.ocpp_helpers import booting_session, eventually
from tests.station_rig import Daemon, daemon, sock_path  # noqa: F401

assert daemon and sock_path


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OCPP_", "STATION_"))}
    return {**env, "STATION_ENV_FILE": os.devnull, **extra}


@contextlib.contextmanager
def silent_serial_port(tmp_path: Path) -> Iterator[Path]:
    """A serial port that opens and never says anything: an ESP32 without power, or wired wrongly."""
    master, slave = os.openpty()
    link = tmp_path / "esp32"
    link.symlink_to(os.ttyname(slave))
    try:
        yield link
    finally:
        os.close(master)
        os.close(slave)


async def test_once_names_the_port_and_what_to_check_when_the_esp32_stays_silent(tmp_path: Path) -> None:
    with silent_serial_port(tmp_path) as port:
        code, out, err = await station_cli(cli_env(
            OCPP_STATION_NAME="CP_1", OCPP_201_URL=f"ws://127.0.0.1:{free_port()}/", STATION_ESP32_PORT=str(port),
            STATION_STATE_DIR=str(tmp_path / "state"), STATION_IPC_SOCKET=str(tmp_path / "station.sock")),
            "--once", "--timeout", "8")
    report = json.loads(out)
    esp32 = next(c for c in report["checks"] if c["name"] == "esp32")
    assert not esp32["ok"]
    assert esp32["detail"].startswith(f"ESP32 charge controller on {port} not answering (no valid status frame within ")
    for first_checks in ("wiring", "baud rate (115200 here", "power", "firmware"):
        assert first_checks in esp32["detail"]
    assert "not connected yet" not in esp32["detail"]
    # The CSMS is down too: its exit code wins (docs/troubleshooting.md), the ESP32 problem is still reported.
    assert code == exitcodes.CSMS_UNREACHABLE, err


def test_when_the_csms_and_the_esp32_both_fail_the_csms_exit_code_wins() -> None:
    report = {"checks": [{"name": "csms", "ok": False, "kind": "unreachable"}, {"name": "esp32", "ok": False}]}
    assert _exit_code(report) == exitcodes.CSMS_UNREACHABLE
    report["checks"][0]["kind"] = "auth_failed"
    assert _exit_code(report) == exitcodes.AUTH_FAILED


async def test_status_says_where_and_since_when_the_esp32_link_is_down_and_what_to_check(daemon: Daemon,
                                                                                           sock_path: Path) -> None:
    daemon.core.on_controller_link(1, False, "no valid status frame for 3 s")
    code, out, err = await station_cli(cli_env(STATION_IPC_SOCKET=str(sock_path)), "status")
    assert code == 0, err
    lines = out.splitlines()
    advice = lines[lines.index(next(line for line in lines if line.startswith("connector 1:"))) + 1]
    assert advice.strip().startswith("ESP32 charge controller on /dev/pts/9 not answering since 20")
    assert "(no valid status frame for 3 s)" in advice and "wiring" in advice and "baud rate (115200" in advice


def test_only_security_events_waiting_are_not_called_transaction_messages(tmp_path: Path) -> None:
    core = StationCore(store=Store(tmp_path / "station.db"), clock=Clock(trusted=True))
    core.security_events.record("StartupOfTheDevice", "device booted")
    core.store.close()

    class Settings:
        db_path = tmp_path / "station.db"

    depth, connected, kinds = _stored_queue(Settings)  # type: ignore[arg-type]
    detail = _queue_check(depth, connected, kinds)["detail"]
    assert detail == "1 security event message waiting (CSMS not connected)"
    assert "transaction" not in detail


def test_waiting_messages_are_counted_by_kind() -> None:
    detail = _queue_check(4, True, {"ended": 1, "updated": 1, "security_event": 1, "notify_event": 1})["detail"]
    assert detail == ("2 transaction messages, 1 NotifyEvent (monitoring) message, 1 security event message "
                      "waiting (being sent)")


async def test_status_counts_the_offline_queue_by_kind(daemon: Daemon, sock_path: Path) -> None:
    daemon.core.security_events.record("StartupOfTheDevice", "device booted")
    daemon.facts["outbox_by_kind"] = daemon.store.outbox_kinds()  # the daemon's own status carries it
    code, out, err = await station_cli(cli_env(STATION_IPC_SOCKET=str(sock_path)), "status")
    assert code == 0, err
    assert "offline queue: 1 (1 security event message)" in out


async def test_status_names_the_url_a_401_came_from_after_the_fallback_to_1_6(daemon: Daemon, sock_path: Path) -> None:
    async with DevCsms(accept_subprotocols=("ocpp1.6",)) as only_16, DevCsms(passwords={"CP": "s3cret"}) as guarded:
        params = LinkParams("CP", password="wrong", url_201=only_16.url("201"), url_16=guarded.url("16"),
                            backoff_min=0.01, backoff_max=0.05, open_timeout=2)
        link = OcppLink(params, booting_session("CP"))
        task = asyncio.create_task(link.run())
        try:
            await eventually(lambda: len(guarded.auth_failures) >= 1 and link.state.last_error_kind is not None
                             and "401" in (link.state.last_error or ""))
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    url_16 = endpoint_url(guarded.url("16"), "CP")
    assert link.state.as_dict()["last_error_url"] == url_16
    daemon.facts["ocpp"] = {**link.state.as_dict(), "url": endpoint_url(only_16.url("201"), "CP")}
    code, out, err = await station_cli(cli_env(STATION_IPC_SOCKET=str(sock_path)), "status")
    assert code == 0, err
    csms_line = next(line for line in out.splitlines() if line.startswith("CSMS:"))
    assert f"last error at {url_16}: HTTP 401" in csms_line


def _meter(**extra: Any) -> dict[str, Any]:
    return {"port": "/dev/ttyUSB1", "model": "adl400", "healthy": True, "last_error": None,
            "stats": {"polls_ok": 40, "polls_failed": 0, "consecutive_failures": 0}, **extra}


def test_once_beside_the_daemon_fails_the_meter_the_daemon_has_as_not_answering() -> None:
    health = {"healthy": False, "reason": "no valid reading for more than 3 s (a meter that answers gives one at "
                                          "least that often)",
              "since": "2026-12-07T10:02:11+00:00"}
    verdict = meter_check(_meter(last_reading_age_s=4.2, stale_after_s=3.0), health)
    assert not verdict["ok"]
    assert "no valid reading for more than 3 s" in verdict["detail"] and "RS-485 wiring (A/B)" in verdict["detail"]


def test_once_beside_the_daemon_passes_a_meter_the_daemon_has_as_answering() -> None:
    health = {"healthy": True, "reason": "valid reading", "since": "2026-12-07T10:02:11+00:00"}
    assert meter_check(_meter(last_reading_age_s=0.4, stale_after_s=3.0), health)["ok"]


def test_once_names_the_url_a_refusal_came_from() -> None:
    from station.once import _csms_check

    state = {"url": None, "last_error": "HTTP 401 (check station id and password/certificate)",
             "last_error_kind": "auth_failed", "last_error_url": "ws://127.0.0.1:9000/ocpp16/CP"}
    result = _csms_check(state, [], None)
    assert result["kind"] == "auth_failed"
    assert result["detail"] == ("HTTP 401 (check station id and password/certificate) at "
                                "ws://127.0.0.1:9000/ocpp16/CP")


async def test_once_beside_the_daemon_names_the_silent_esp32_port_and_since_when(tmp_path: Path) -> None:
    from station.ipc.client import IpcClient
    from tests.e2e import DaemonProcess, station_env
    from tests.test_once import run_once

    with silent_serial_port(tmp_path) as port:
        async with DevCsms() as csms:
            env = station_env(tmp_path, csms, port)
            daemon = await DaemonProcess(env, tmp_path / "station.log").start()
            try:
                await daemon.wait_ipc()
                async with IpcClient(env["STATION_IPC_SOCKET"]) as client, asyncio.timeout(60):
                    while not (await client.status())["connectors"][0]["controller_link"]["reason"].startswith(
                            "no valid status frame"):
                        await asyncio.sleep(0.2)
                code, report, _ = await run_once(env, "--timeout", "8")
            finally:
                await daemon.stop()
    assert report["mode"] == "daemon"
    detail = next(c["detail"] for c in report["checks"] if c["name"] == "esp32")
    assert detail.startswith(f"ESP32 charge controller on {port} not answering since 20"), detail
    assert "(no valid status frame for 3 s)" in detail and "wiring" in detail and "firmware" in detail
    assert code == exitcodes.ESP32_UNREACHABLE
