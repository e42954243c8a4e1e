"""A full charging session through the real core, the OCPP client and the dev CSMS, per version."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from station.core.model import MeterReading
from station.ocpp.rpc import StrictChargePoint
from tests.ocpp_helpers import Rig, eventually, rig_on_dev_csms


@pytest.fixture(params=["201", "16"])
async def rig(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    async with rig_on_dev_csms(request.param, tmp_path / "station.db", heartbeat_interval=30) as rig:
        yield rig


def tx_actions(rig: Rig) -> list[str]:
    wanted = {"TransactionEvent", "StartTransaction", "StopTransaction", "MeterValues"}
    return [r.action for r in rig.csms.calls(station_id="CP") if r.action in wanted]


async def remote_start(rig: Rig, token: str = "TAG1") -> dict[str, object]:
    if rig.version == "201":
        return await rig.csms.call("CP", "RequestStartTransaction", {"idToken": {"idToken": token, "type": "ISO14443"}, "remoteStartId": 7, "evseId": 1})
    return await rig.csms.call("CP", "RemoteStartTransaction", {"idTag": token, "connectorId": 1})


async def remote_stop(rig: Rig) -> dict[str, object]:
    if rig.version == "201":
        started = await rig.csms.wait_for("TransactionEvent", predicate=lambda r: r.payload["eventType"] == "Started")
        return await rig.csms.call("CP", "RequestStopTransaction", {"transactionId": started.payload["transactionInfo"]["transactionId"]})
    assert rig.core is not None
    connector = rig.core.connectors[1]
    await eventually(lambda: connector.transaction is not None and connector.transaction.csms_id is not None)
    assert connector.transaction is not None and connector.transaction.csms_id is not None
    return await rig.csms.call("CP", "RemoteStopTransaction", {"transactionId": int(connector.transaction.csms_id)})


async def test_boot_then_status_of_every_connector(rig: Rig) -> None:
    boot = await rig.csms.wait_for("BootNotification")
    status = await rig.csms.wait_for("StatusNotification")
    assert rig.csms.received.index(boot) < rig.csms.received.index(status)
    if rig.version == "201":
        assert status.payload["connectorStatus"] == "Available" and status.payload["evseId"] == 1
    else:
        assert status.payload["status"] == "Available" and status.payload["errorCode"] == "NoError"


async def test_remote_start_with_the_vehicle_plugged_in_commands_the_controller_before_answering(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert rig.core is not None and rig.esp is not None
    esp = rig.esp
    await rig.csms.wait_for("StatusNotification")
    esp.plug()
    commands_when_answered: list[list[tuple[str, int | None]]] = []
    real_send = StrictChargePoint._send

    async def send(self: StrictChargePoint, message: str, parsed: list[object] | None = None) -> None:
        if self.side == "station" and message.startswith("[3,"):
            commands_when_answered.append(list(esp.commands))
        await real_send(self, message, parsed)  # type: ignore[arg-type]

    monkeypatch.setattr(StrictChargePoint, "_send", send)
    assert (await remote_start(rig))["status"] == "Accepted"
    assert ("authorize", None) in commands_when_answered[-1]


async def test_full_charging_session(rig: Rig) -> None:
    assert rig.core is not None and rig.esp is not None
    await rig.csms.wait_for("StatusNotification")
    assert (await remote_start(rig))["status"] == "Accepted"
    rig.core.on_meter_reading(MeterReading(1000.0, power_w=0.0))
    rig.esp.plug()
    rig.esp.ev_requests_charge()
    rig.core.on_meter_reading(MeterReading(1500.0, power_w=7000.0, current_a=(10.0, 10.0, 10.0), voltage_v=(230.0, 230.0, 230.0)))
    rig.core.meter_value_seconds = 0
    rig.core.tick()
    rig.core.meter_value_seconds = 3600
    assert (await remote_stop(rig))["status"] == "Accepted"
    rig.esp.unplug()
    await rig.wait_outbox_empty()
    if rig.version == "201":
        events = rig.calls("TransactionEvent")
        assert [e.payload["eventType"] for e in events][0] == "Started" and events[-1].payload["eventType"] == "Ended"
        assert [e.payload["seqNo"] for e in events] == list(range(len(events)))
        assert events[0].payload["idToken"]["idToken"] == "TAG1"
        assert events[0].payload["transactionInfo"]["remoteStartId"] == 7
        assert events[-1].payload["transactionInfo"]["stoppedReason"] == "Remote"
        assert any(e.payload["triggerReason"] == "MeterValuePeriodic" and e.payload["meterValue"] for e in events)
        assert not any(e.payload.get("offline") for e in events)
        await rig.csms.wait_for("StatusNotification", predicate=lambda r: r.payload["connectorStatus"] == "Occupied")
    else:
        actions = tx_actions(rig)
        assert actions[0] == "StartTransaction" and actions[-1] == "StopTransaction" and "MeterValues" in actions
        start, stop = rig.calls("StartTransaction")[0], rig.calls("StopTransaction")[0]
        assert start.payload["meterStart"] == 1000 and stop.payload["meterStop"] == 1500
        assert stop.payload["reason"] == "Remote" and stop.payload["transactionId"] == 1
        await rig.csms.wait_for("StatusNotification", predicate=lambda r: r.payload["status"] == "Charging")
    assert rig.core.store.parked_outbox() == []


async def test_local_token_is_authorized_by_the_csms(rig: Rig) -> None:
    assert rig.core is not None
    await rig.csms.wait_for("StatusNotification")
    rig.csms.tokens["BAD"] = "Blocked"
    assert (await rig.core.authorize_token("GOOD")).status == "Accepted"
    assert (await rig.core.authorize_token("BAD")).status == "Blocked"
    assert len(rig.calls("Authorize")) == 2


async def test_heartbeat_follows_the_interval_set_live(rig: Rig) -> None:
    await rig.csms.wait_for("StatusNotification")
    if rig.version == "201":
        answer = await rig.csms.call("CP", "SetVariables", {"setVariableData": [
            {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}, "attributeValue": "1"}]})
        assert answer["setVariableResult"][0]["attributeStatus"] == "Accepted"
    else:
        assert (await rig.csms.call("CP", "ChangeConfiguration", {"key": "HeartbeatInterval", "value": "1"}))["status"] == "Accepted"
    await rig.csms.wait_for("Heartbeat", timeout=5)
    assert rig.core is not None and rig.core.store.get("ocpp:HeartbeatInterval") == 1
