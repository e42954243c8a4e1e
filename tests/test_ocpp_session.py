"""The station's OCPP sessions (both versions) over a real dev CSMS on loopback, driven by the real core."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from station.core.clock import Clock
from station.core.model import MeterReading
from station.core.station import StationCore
from station.core.store import Store
from station.devtools.csms import DevCsms
from station.ocpp.client import OcppClient
from station.ocpp.connection import LinkParams
from tests.core_helpers import RecordingController

STATION = "TEST_AC_001"


@pytest.fixture(params=["201", "16"])
def version(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def csms() -> AsyncIterator[DevCsms]:
    async with DevCsms(heartbeat_interval=1) as server:
        yield server


class Station:
    def __init__(self, db: Path, csms: DevCsms, version: str) -> None:
        self.core = StationCore(store=Store(db), clock=Clock(trusted=False))
        self.esp = RecordingController(self.core)
        self.core.attach_controller(1, self.esp)
        self.core.on_controller_status(1, self.esp.current)
        params = LinkParams(station_id=STATION, primary=version, url_201=csms.url("201"), url_16=csms.url("16"),
                            backoff_min=0.05, backoff_max=0.2)
        self.client = OcppClient(params, self.core, heartbeat_seconds=300)
        self.task = asyncio.create_task(self.client.run())

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.core.close()
        self.core.store.close()


@pytest.fixture
async def station(tmp_path: Path, csms: DevCsms, version: str) -> AsyncIterator[Station]:
    s = Station(tmp_path / "station.db", csms, version)
    yield s
    await s.close()


def actions(csms: DevCsms) -> list[str]:
    return [r.action for r in csms.calls(station_id=STATION)]


async def test_boot_then_status_then_heartbeat_at_the_csms_interval(csms: DevCsms, station: Station) -> None:
    await csms.wait_for("Heartbeat", STATION, timeout=10)
    seen = actions(csms)
    assert seen[:2] == ["BootNotification", "StatusNotification"]
    assert station.client.heartbeat_seconds == 1


async def test_boot_response_time_makes_the_clock_trusted(csms: DevCsms, station: Station) -> None:
    await csms.wait_for("StatusNotification", STATION, timeout=10)
    assert station.core.clock.trusted and station.core.clock.trust_source == "csms"


async def test_remote_start_and_stop_produce_a_complete_transaction(
    csms: DevCsms, station: Station, version: str
) -> None:
    await csms.wait_for("StatusNotification", STATION, timeout=10)
    station.core.on_meter_reading(MeterReading(energy_import_wh=1000.0, power_w=0.0))
    if version == "201":
        answer = await csms.call(STATION, "RequestStartTransaction",
                                 {"idToken": {"idToken": "TOKEN1", "type": "ISO14443"}, "remoteStartId": 7})
    else:
        answer = await csms.call(STATION, "RemoteStartTransaction", {"idTag": "TOKEN1", "connectorId": 1})
    assert answer["status"] == "Accepted"
    station.esp.plug()
    station.esp.ev_requests_charge()
    start_action = "TransactionEvent" if version == "201" else "StartTransaction"
    started = await csms.wait_for(start_action, STATION, timeout=10)
    station.core.on_meter_reading(MeterReading(energy_import_wh=1750.0, power_w=7000.0))
    if version == "201":
        tx_id = started.payload["transactionInfo"]["transactionId"]
        await csms.call(STATION, "RequestStopTransaction", {"transactionId": tx_id})
        ended = await csms.wait_for("TransactionEvent", STATION, lambda r: r.payload["eventType"] == "Ended",
                                    timeout=10)
        assert ended.payload["transactionInfo"]["stoppedReason"] == "Remote"
        assert started.payload["transactionInfo"]["remoteStartId"] == 7
    else:
        await asyncio.sleep(0.2)
        tx = station.core.connectors[1].transaction
        assert tx is not None and tx.csms_id is not None
        await csms.call(STATION, "RemoteStopTransaction", {"transactionId": int(tx.csms_id)})
        ended = await csms.wait_for("StopTransaction", STATION, timeout=10)
        assert ended.payload["meterStop"] == 1750 and ended.payload["reason"] == "Remote"
    await asyncio.sleep(0.3)
    assert station.core.store.outbox_depth() == 0


async def test_transaction_events_recorded_offline_replay_in_order_after_connect(
    tmp_path: Path, version: str
) -> None:
    csms = DevCsms(heartbeat_interval=60)
    await csms.start()
    port = csms.port
    await csms.stop()
    # The station charges while the CSMS is down.
    csms = DevCsms(port=port, heartbeat_interval=60)
    station = Station(tmp_path / "s.db", csms, version)
    try:
        station.core.request_start(1, "OFFLINE1", "Local", trigger="Authorized")
        station.esp.plug()
        station.esp.ev_requests_charge()
        await asyncio.sleep(0.05)
        station.core.request_stop(connector_id=1, reason="Local", trigger="StopAuthorized")
        depth = station.core.store.outbox_depth()
        assert depth >= 2
        await csms.start()
        end_action = "TransactionEvent" if version == "201" else "StopTransaction"
        await csms.wait_for(end_action, STATION, (lambda r: r.payload.get("eventType", "Ended") == "Ended"),
                            timeout=15)
        if version == "201":
            events = [r.payload for r in csms.calls("TransactionEvent", STATION)]
            assert [e["seqNo"] for e in events] == list(range(len(events)))
            assert all(e.get("offline") is True for e in events)
            assert [e["eventType"] for e in events][0] == "Started"
        else:
            assert actions(csms).index("StartTransaction") < actions(csms).index("StopTransaction")
        await asyncio.sleep(0.2)
        assert station.core.store.outbox_depth() == 0
    finally:
        await station.close()
        await csms.stop()
