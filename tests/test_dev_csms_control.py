"""`station dev-csms call` against a real dev CSMS with a real station rig connected: what the
operator sees when a request is wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from station.devtools.csms_control import ControlServer, call
from tests.ocpp_helpers import rig_on_dev_csms


async def control_call(rig_csms: Any, path: Path, **request: Any) -> list[dict[str, Any]]:
    server = ControlServer(rig_csms, path)
    await server.start()
    lines: list[dict[str, Any]] = []
    try:
        await call(path, {"payload": {}} | request, lines.append)
    finally:
        await server.close()
    return lines


async def test_a_request_that_violates_the_schema_is_answered_with_the_reason(tmp_path: Path) -> None:
    async with rig_on_dev_csms("201", tmp_path / "station.db") as rig:
        lines = await control_call(rig.csms, tmp_path / "csms.ctl", station=rig.station_id, action="Reset",
                                   payload={"type": "Weird"})
    assert len(lines) == 1 and lines[0]["kind"] == "error" and lines[0]["code"] == "FormatViolation", lines
    assert "'Weird' is not one of ['Immediate', 'OnIdle']" in lines[0]["details"]["cause"]


async def test_an_unknown_station_is_named_with_the_stations_that_are_connected(tmp_path: Path) -> None:
    async with rig_on_dev_csms("201", tmp_path / "station.db") as rig:
        lines = await control_call(rig.csms, tmp_path / "csms.ctl", station="NOPE", action="Reset",
                                   payload={"type": "Immediate"})
    assert lines == [{"kind": "error", "code": "NotConnected",
                      "description": f"station 'NOPE' is not connected (connected: {rig.station_id})"}]


async def test_an_action_of_the_other_version_is_refused_before_sending_and_says_why(tmp_path: Path) -> None:
    async with rig_on_dev_csms("16", tmp_path / "station.db") as rig:
        lines = await control_call(rig.csms, tmp_path / "csms.ctl", station=rig.station_id, action="GetVariables",
                                   payload={"getVariableData": []})
    assert len(lines) == 1 and lines[0]["code"] == "NotImplemented", lines
    assert lines[0]["description"] == "not sent: GetVariables is not an OCPP 1.6 action (the station's version)"
