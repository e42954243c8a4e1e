"""End to end through the real `station run` process: the CSMS changes the station's password,
the daemon reconnects with it and keeps it across a restart, `station --once` uses it too; the
new password appears nowhere in the daemon's log, its state files or its database."""

from __future__ import annotations

from pathlib import Path

from tests.e2e import STATION_ID, DaemonProcess, running_station
from tests.test_once import run_once

OLD = "e2e-old-Passw0rd-001"
CANARY = "canary-NEW-pw-Zq81x7Kd"


async def test_a_password_set_by_the_csms_is_used_after_the_reconnect_and_the_restart_and_never_logged(tmp_path: Path) -> None:
    async with running_station(tmp_path, OCPP_STATION_PASSWORD=OLD) as (csms, _sim, daemon):
        csms.passwords = {STATION_ID: OLD}
        await csms.wait_for("StatusNotification", STATION_ID, timeout=20)
        csms.passwords[STATION_ID] = CANARY
        mark = csms.mark()
        answer = await csms.call(STATION_ID, "SetVariables", {"setVariableData": [{
            "component": {"name": "SecurityCtrlr"}, "variable": {"name": "BasicAuthPassword"}, "attributeValue": CANARY}]})
        assert answer["setVariableResult"][0]["attributeStatus"] == "Accepted"
        await csms.wait_for("StatusNotification", STATION_ID, since=mark, timeout=20)
        assert csms.auth_failures == []
        await daemon.stop()
        mark = csms.mark()
        restarted = await DaemonProcess(daemon.env, tmp_path / "station.log").start()
        try:
            await csms.wait_for("BootNotification", STATION_ID, since=mark, timeout=20)
            assert csms.auth_failures == []  # the env file still says OLD: the CSMS's password won
        finally:
            await restarted.stop()
        auth_failures = len(csms.auth_failures)
        _, report, output = await run_once(daemon.env)  # standalone, as a technician runs it
        csms_check = next(c for c in report["checks"] if c["name"] == "csms")
        assert csms_check["ok"], csms_check
        assert len(csms.auth_failures) == auth_failures and CANARY not in output
        log = daemon.log()
    assert "SetVariables" in log and CANARY not in log and CANARY.encode().hex() not in log
    for path in (tmp_path / "state").rglob("*"):
        if path.is_file():
            assert CANARY.encode() not in path.read_bytes(), path
