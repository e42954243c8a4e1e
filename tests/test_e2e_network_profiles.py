"""End to end (B09/B10): SetNetworkProfile and NetworkConfigurationPriority move the real daemon to
another dev CSMS after a Reset; an unreachable new endpoint falls back to the previous profile."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from station.devtools.csms import DevCsms
from tests.e2e import CANARY_PASSWORD, STATION_ID, DaemonProcess, running_station

PASSWORD = {"OCPP_STATION_PASSWORD": CANARY_PASSWORD}  # security profile 1 (ws:// + basic auth)


def network_profile(url: str, slot: int = 1, **data: Any) -> dict[str, Any]:
    return {"configurationSlot": slot, "connectionData": {
        "ocppVersion": "OCPP20", "ocppTransport": "JSON", "ocppCsmsUrl": url, "messageTimeout": 30,
        "securityProfile": 1, "ocppInterface": "Wired0", **data}}


def priority(value: str) -> dict[str, Any]:
    return {"setVariableData": [{"component": {"name": "OCPPCommCtrlr"},
                                 "variable": {"name": "NetworkConfigurationPriority"}, "attributeValue": value}]}


def history(state: Path) -> list[dict[str, Any]]:
    path = state / "network-profiles.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def restart_after_reset(csms: DevCsms, daemon: DaemonProcess, log: Path) -> DaemonProcess:
    answer = await csms.call(STATION_ID, "Reset", {"type": "Immediate"})
    assert answer["status"] == "Accepted"
    assert daemon.proc is not None
    await daemon.proc.wait()  # systemd's Restart=always is played by the test
    await daemon.stop()
    return await DaemonProcess(daemon.env, log).start()


async def test_a_new_profile_and_priority_move_the_station_to_the_new_csms_after_a_reset(tmp_path: Path) -> None:
    async with DevCsms(heartbeat_interval=30) as new_csms, running_station(tmp_path, **PASSWORD) as (old_csms, _sim, daemon):
        await old_csms.wait_for("StatusNotification", STATION_ID, timeout=20)
        stored = await old_csms.call(STATION_ID, "SetNetworkProfile", network_profile(new_csms.url("201")))
        ordered = await old_csms.call(STATION_ID, "SetVariables", priority("1,0"))
        restarted = await restart_after_reset(old_csms, daemon, tmp_path / "station-2.log")
        try:
            boot = await new_csms.wait_for("BootNotification", STATION_ID, timeout=20)
        finally:
            await restarted.stop()
    assert stored == {"status": "Accepted"}
    assert ordered["setVariableResult"][0]["attributeStatus"] == "RebootRequired"
    assert boot.payload["reason"] == "RemoteReset"
    assert [h["event"] for h in history(tmp_path / "state")][-1] == "accepted"
    assert history(tmp_path / "state")[-1]["profile"]["slot"] == 1


async def test_an_unreachable_new_endpoint_falls_back_to_the_previous_profile_and_reports_both(tmp_path: Path) -> None:
    dead = f"ws://127.0.0.1:{closed_port()}/ocpp201/"
    async with running_station(tmp_path, **PASSWORD) as (csms, _sim, daemon):
        await csms.wait_for("StatusNotification", STATION_ID, timeout=20)
        await csms.call(STATION_ID, "SetNetworkProfile", network_profile(dead))
        await csms.call(STATION_ID, "SetVariables", {"setVariableData": [{
            "component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "NetworkProfileConnectionAttempts"},
            "attributeValue": "2"}]})
        await csms.call(STATION_ID, "SetVariables", priority("1,0"))
        mark = csms.mark()
        restarted = await restart_after_reset(csms, daemon, tmp_path / "station-2.log")
        try:
            await csms.wait_for("BootNotification", STATION_ID, since=mark, timeout=30)
            answer = await csms.call(STATION_ID, "GetVariables", {"getVariableData": [{
                "component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "NetworkConfigurationPriority"}}]})
        finally:
            await restarted.stop()
        log = restarted.log()
    events = history(tmp_path / "state")
    fallback = next(e for e in events if e["event"] == "fallback")
    assert fallback["failed"]["slot"] == 1 and fallback["attempts"] == 2 and fallback["next"]["slot"] == 0
    assert events[-1]["event"] == "fallback-accepted" and events[-1]["profile"]["slot"] == 0
    assert "network profile 1 not reachable after 2 attempt(s)" in log
    assert "network profile 0 accepted by the CSMS (fallback" in log
    assert answer["getVariableResult"][0]["attributeValue"] == "1,0"  # the CSMS's order stays; the next Reset tries again


@pytest.mark.parametrize(("change", "reason"), [
    ({"securityProfile": 0}, "NoSecurityDowngrade"),
    ({"ocppTransport": "SOAP"}, "InvalidNetworkConf"),
    ({"ocppCsmsUrl": "https://not-a-websocket.example/"}, "InvalidNetworkConf"),
    ({"securityProfile": 2}, "InvalidNetworkConf"),  # profile 2 needs wss://
])
async def test_set_network_profile_refuses_what_cannot_work(tmp_path: Path, change: dict[str, Any], reason: str) -> None:
    async with running_station(tmp_path, **PASSWORD) as (csms, _sim, _daemon):
        await csms.wait_for("StatusNotification", STATION_ID, timeout=20)
        answer = await csms.call(STATION_ID, "SetNetworkProfile", network_profile(csms.url("201"), **change))
    assert answer["status"] == "Rejected" and answer["statusInfo"]["reasonCode"] == reason


async def test_set_network_profile_refuses_the_installations_slot_and_unknown_slots(tmp_path: Path) -> None:
    async with running_station(tmp_path, **PASSWORD) as (csms, _sim, _daemon):
        await csms.wait_for("StatusNotification", STATION_ID, timeout=20)
        zero = await csms.call(STATION_ID, "SetNetworkProfile", network_profile(csms.url("201"), slot=0))
        nine = await csms.call(STATION_ID, "SetNetworkProfile", network_profile(csms.url("201"), slot=9))
        unknown = await csms.call(STATION_ID, "SetVariables", priority("2,0"))
    assert zero["statusInfo"]["reasonCode"] == nine["statusInfo"]["reasonCode"] == "InvalidConfSlot"
    assert unknown["setVariableResult"][0]["attributeStatus"] == "Rejected"


async def test_set_network_profile_from_the_dev_csms_command_line(tmp_path: Path) -> None:
    from tests.test_e2e_device_model import cli, csms_process, station

    async with csms_process(tmp_path) as csms, station(tmp_path, csms, "201"):
        profile = network_profile("ws://127.0.0.1:9/ocpp201/", securityProfile=0)
        code, stored = await cli(csms, STATION_ID, "SetNetworkProfile", json.dumps(profile))
        _, ordered = await cli(csms, STATION_ID, "SetVariables", json.dumps(priority("1,0")))
        _, read = await cli(csms, STATION_ID, "GetVariables", json.dumps({"getVariableData": [{
            "component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "NetworkConfigurationPriority"}}]}))
    assert code == 0 and stored[0]["payload"] == {"status": "Accepted"}
    assert ordered[0]["payload"]["setVariableResult"][0]["attributeStatus"] == "RebootRequired"
    assert read[0]["payload"]["getVariableResult"][0]["attributeValue"] == "1,0"


async def test_the_daemon_connects_where_station_migrate_csms_staged_the_new_endpoint(tmp_path: Path) -> None:
    from station.field import migrate

    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    async with DevCsms(heartbeat_interval=30) as new_csms, DevCsms(heartbeat_interval=30) as old_csms:
        (root / "etc/ocpp_station.env").write_text(
            f"OCPP_STATION_NAME='{STATION_ID}'\nOCPP_201_URL='{old_csms.url('201')}'\nSTATION_STATE_DIR='/state'\n")
        staged = migrate.stage(new_csms.url("201"), root=root)
        assert not isinstance(staged, str) and staged.changed
        state = {"OCPP_201_URL": old_csms.url("201"), "STATION_STATE_DIR": str(root / "state")}
        async with running_station(tmp_path, **state) as (_unused, _sim, _daemon):
            boot = await new_csms.wait_for("BootNotification", STATION_ID, timeout=20)
    assert boot.payload["chargingStation"]["model"] == "AC22"
    assert old_csms.calls("BootNotification", STATION_ID) == []
    assert [h["event"] for h in history(root / "state")] == ["migrate", "accepted"]
