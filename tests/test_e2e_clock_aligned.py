"""Clock-aligned meter values arrive on the clock boundary, in both versions: the real daemon, the
ESP32 and meter simulators and the dev CSMS. The CSMS sets a 2 s interval; idle values come as
MeterValues, values during a transaction in the transaction's own messages (context Sample.Clock).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from station.controller.simulator import SimulatorProcess
from station.devtools.csms import DevCsms, Received
from tests.e2e import STATION_ID, metered_station

INTERVAL_S = 2


@asynccontextmanager
async def station(tmp_path: Path, version: str) -> AsyncIterator[tuple[DevCsms, SimulatorProcess]]:
    async with metered_station(tmp_path, energy_wh=200_000, esp_interval=1, OCPP_PRIMARY=version,
                               STATION_METER_VALUE_SECONDS="3600") as (csms, _, esp, _):
        if version == "201":
            answer = await csms.call(STATION_ID, "SetVariables", {"setVariableData": [{
                "component": {"name": "AlignedDataCtrlr"}, "variable": {"name": "Interval"},
                "attributeValue": str(INTERVAL_S)}]})
            assert answer["setVariableResult"][0]["attributeStatus"] == "Accepted"
        else:
            answer = await csms.call(STATION_ID, "ChangeConfiguration",
                                     {"key": "ClockAlignedDataInterval", "value": str(INTERVAL_S)})
            assert answer["status"] == "Accepted"
        yield csms, esp


def stamp(value: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(value["timestamp"].replace("Z", "+00:00"))


def assert_on_the_boundary(received: Received, value: dict[str, Any]) -> None:
    at = stamp(value)
    assert at.microsecond == 0 and at.second % INTERVAL_S == 0, at  # a multiple of the interval since midnight
    assert timedelta(0) <= received.at - at < timedelta(seconds=1.5), (received.at, at)  # sent at once
    assert {s["context"] for s in value["sampledValue"]} == {"Sample.Clock"}
    # AlignedDataCtrlr.Measurands / MeterValuesAlignedData default: the energy register only.
    assert [s["measurand"] for s in value["sampledValue"]] == ["Energy.Active.Import.Register"]


@pytest.mark.parametrize("version", ["201", "16"])
async def test_clock_aligned_values_arrive_on_the_boundary_idle_and_during_a_transaction(
    tmp_path: Path, version: str
) -> None:
    async with station(tmp_path, version) as (csms, esp):
        idle = await csms.wait_for("MeterValues", STATION_ID, timeout=10)
        assert_on_the_boundary(idle, idle.payload["meterValue"][0])
        assert "transactionId" not in idle.payload
        if version == "201":
            await csms.call(STATION_ID, "RequestStartTransaction",
                            {"idToken": {"idToken": "CLOCK-1", "type": "ISO14443"}, "remoteStartId": 3})
        else:
            await csms.call(STATION_ID, "RemoteStartTransaction", {"connectorId": 1, "idTag": "CLOCK-1"})
        await esp.command("plug")
        await esp.command("ev_charge")
        if version == "201":
            started = await csms.wait_for("TransactionEvent", STATION_ID, lambda r: r.payload["eventType"] == "Started",
                                          timeout=10)
            clock = await csms.wait_for("TransactionEvent", STATION_ID,
                                        lambda r: r.payload.get("triggerReason") == "MeterValueClock",
                                        since=csms.received.index(started), timeout=10)
            assert clock.payload["eventType"] == "Updated"
            assert stamp(clock.payload) == stamp(clock.payload["meterValue"][0])
            assert_on_the_boundary(clock, clock.payload["meterValue"][0])
        else:
            start = await csms.wait_for("StartTransaction", STATION_ID, timeout=10)
            clock = await csms.wait_for("MeterValues", STATION_ID, lambda r: "transactionId" in r.payload,
                                        since=csms.received.index(start), timeout=10)
            assert clock.payload["transactionId"] == csms.last_transaction_id
            assert_on_the_boundary(clock, clock.payload["meterValue"][0])
        mark = csms.mark()
        await esp.command("unplug")
        if version == "201":
            await csms.wait_for("TransactionEvent", STATION_ID, lambda r: r.payload["eventType"] == "Ended", timeout=10)
        else:
            await csms.wait_for("StopTransaction", STATION_ID, timeout=10)
        later = await csms.wait_for("MeterValues", STATION_ID, lambda r: "transactionId" not in r.payload,
                                    since=mark, timeout=10)
        assert_on_the_boundary(later, later.payload["meterValue"][0])  # idle again after the transaction
