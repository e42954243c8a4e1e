"""End to end: dev CSMS on 127.0.0.1, ESP32 simulator on a pty, the real `station run` process."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.e2e import STATION_ID, running_station, station_cli


@pytest.mark.parametrize("version", ["201", "16"])
async def test_station_boots_reports_status_and_heartbeats_in_order(tmp_path: Path, version: str) -> None:
    async with running_station(tmp_path, version=version) as (csms, _sim, daemon):
        await csms.wait_for("Heartbeat", STATION_ID, timeout=20)
        actions = [r.action for r in csms.calls(station_id=STATION_ID)]
        assert actions[0] == "BootNotification"
        assert actions[1] == "StatusNotification"
        assert "Heartbeat" in actions[2:]
        assert csms.calls("BootNotification")[0].version == version


async def test_plug_in_and_remote_start_charge_and_end_with_a_complete_transaction(tmp_path: Path) -> None:
    async with running_station(tmp_path) as (csms, sim, daemon):
        assert sim is not None
        await csms.wait_for("StatusNotification", STATION_ID, timeout=20)
        await sim.command("plug")
        await csms.wait_for("StatusNotification", STATION_ID,
                            lambda r: r.payload["connectorStatus"] == "Occupied", timeout=10)
        answer = await csms.call(STATION_ID, "RequestStartTransaction",
                                 {"idToken": {"idToken": "E2E-TAG", "type": "ISO14443"}, "remoteStartId": 3})
        assert answer["status"] == "Accepted"
        started = await csms.wait_for("TransactionEvent", STATION_ID,
                                      lambda r: r.payload["eventType"] == "Started", timeout=10)
        await sim.command("ev_charge")
        await sim.wait_for(lambda s: s["RL"] == "1" or s["RL"] == 1, timeout=10)
        await csms.wait_for("TransactionEvent", STATION_ID,
                            lambda r: r.payload["transactionInfo"].get("chargingState") == "Charging", timeout=10)
        await sim.command("unplug")
        ended = await csms.wait_for("TransactionEvent", STATION_ID,
                                    lambda r: r.payload["eventType"] == "Ended", timeout=10)
        tx_id = started.payload["transactionInfo"]["transactionId"]
        assert ended.payload["transactionInfo"]["transactionId"] == tx_id
        assert ended.payload["transactionInfo"]["stoppedReason"] == "EVDisconnected"
        seq = [r.payload["seqNo"] for r in csms.calls("TransactionEvent", STATION_ID)]
        assert seq == list(range(len(seq)))


async def test_sigterm_stops_the_daemon_cleanly(tmp_path: Path) -> None:
    async with running_station(tmp_path) as (csms, _sim, daemon):
        await csms.wait_for("StatusNotification", STATION_ID, timeout=20)
        assert await daemon.stop(signal.SIGTERM, timeout=5) == 0
        assert '"station stopped"' in daemon.log()




async def test_status_command_summarizes_the_running_daemon(tmp_path: Path) -> None:
    async with running_station(tmp_path) as (csms, _sim, daemon):
        await csms.wait_for("StatusNotification", STATION_ID, timeout=20)
        code, out, err = await station_cli(daemon.env, "status")
    assert code == 0, err
    assert f"station {STATION_ID}" in out
    assert "CSMS: connected  OCPP 2.0.1" in out
    assert "connector 1: Available" in out


async def test_status_command_without_daemon_exits_7_with_a_clear_line(tmp_path: Path) -> None:
    from tests.e2e import station_env
    from station.devtools.csms import DevCsms

    env = station_env(tmp_path, DevCsms(port=1), tmp_path / "esp32")
    code, out, err = await station_cli(env, "status")
    assert code == 7
    assert err.startswith(f"station daemon not reachable: no daemon socket at {env['STATION_IPC_SOCKET']} ")
