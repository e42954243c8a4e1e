"""TxStartPoint / TxStopPoint / StopTxOnEVSideDisconnect decide when a transaction starts and ends."""

from __future__ import annotations

import time

import pytest

from station.core.device_model import Status
from station.core.station import StationCore
from station.core.store import Store
from tests.core_helpers import RecordingController, core, esp, settle, store  # noqa: F401 — fixtures


def outbox(store: Store) -> list[tuple[str, str]]:
    return [(e.kind, e.trigger) for e in store.pending_outbox(1000) if e.is_transaction]


def configure(core: StationCore, variable: str, value: str) -> None:
    entry = core.device_model.entry("TxCtrlr", variable)
    assert core.device_model.write(entry, value).status == Status.ACCEPTED


async def test_ev_connected_start_point_starts_at_plug_in_without_a_token_and_keeps_the_relay_open(
    core: StationCore, esp: RecordingController, store: Store
) -> None:
    configure(core, "TxStartPoint", "EVConnected")
    esp.plug()
    await settle()
    tx = core.connectors[1].transaction
    assert tx is not None and tx.id_token is None and not tx.authorized
    assert ("authorize", None) not in esp.commands
    assert outbox(store)[0] == ("started", "CablePluggedIn")


async def test_a_token_for_a_transaction_started_at_plug_in_authorizes_it_and_is_reported(
    core: StationCore, esp: RecordingController, store: Store
) -> None:
    configure(core, "TxStartPoint", "EVConnected")
    esp.plug()
    assert core.request_start(1, "TOKEN1", "ISO14443", trigger="Authorized") == (True, "accepted")
    await settle()
    tx = core.connectors[1].transaction
    assert tx is not None and tx.id_token == "TOKEN1" and tx.authorized
    assert ("authorize", None) in esp.commands
    updated = [e for e in store.pending_outbox(10) if e.kind == "updated" and e.trigger == "Authorized"]
    assert updated and updated[0].data["id_token"] == "TOKEN1" and updated[0].data["token_update"]


async def test_authorized_start_point_starts_without_a_vehicle_and_times_out_if_none_comes(
    core: StationCore, esp: RecordingController, store: Store
) -> None:
    configure(core, "TxStartPoint", "Authorized")
    core.request_start(1, "TOKEN1", "ISO14443", trigger="Authorized")
    conn = core.connectors[1]
    assert conn.transaction is not None and conn.ev_wait_deadline is not None
    conn.ev_wait_deadline = time.monotonic() - 1  # EVConnectionTimeOut passed
    core.tick()
    assert conn.transaction is None
    ended = [e for e in store.pending_outbox(10) if e.kind == "ended"][0]
    assert ended.trigger == "EVConnectTimeout" and ended.data["stop_reason"] == "Timeout"


async def test_energy_transfer_start_point_waits_for_the_relay_to_close(
    core: StationCore, esp: RecordingController
) -> None:
    configure(core, "TxStartPoint", "EnergyTransfer")
    core.request_start(1, "TOKEN1", "ISO14443", trigger="Authorized")
    esp.plug()
    await settle()
    assert core.connectors[1].transaction is None
    assert ("authorize", None) in esp.commands  # the session is authorized: the relay may close
    esp.ev_requests_charge()
    await settle()
    tx = core.connectors[1].transaction
    assert tx is not None and tx.id_token == "TOKEN1"


async def test_energy_transfer_stop_point_ends_when_the_ev_stops_drawing(
    core: StationCore, esp: RecordingController, store: Store
) -> None:
    configure(core, "TxStopPoint", "EnergyTransfer")
    core.request_start(1, "TOKEN1", "ISO14443", trigger="Authorized")
    esp.plug()
    await settle()
    esp.ev_requests_charge()
    await settle()
    assert core.connectors[1].transaction is not None
    esp._emit(pilot=esp.current.pilot.B, relay_closed=False)  # the EV pauses
    await settle()
    assert core.connectors[1].transaction is None
    ended = [e for e in store.pending_outbox(20) if e.kind == "ended"][0]
    assert ended.data["stop_reason"] == "StoppedByEV"


async def test_ev_connected_stop_point_a_stop_request_opens_the_relay_and_the_unplug_ends_it(
    core: StationCore, esp: RecordingController, store: Store
) -> None:
    configure(core, "TxStopPoint", "EVConnected")
    core.request_start(1, "TOKEN1", "ISO14443", trigger="Authorized")
    esp.plug()
    esp.ev_requests_charge()
    await settle()
    assert core.request_stop(connector_id=1, reason="Remote", trigger="RemoteStop")
    await settle()
    tx = core.connectors[1].transaction
    assert tx is not None and not tx.authorized
    assert ("stop", None) in esp.commands
    esp.unplug()
    await settle()
    assert core.connectors[1].transaction is None
    ended = [e for e in store.pending_outbox(20) if e.kind == "ended"][0]
    assert ended.data["stop_reason"] == "Remote" and ended.trigger == "EVDeparted"


async def test_without_stop_on_ev_side_disconnect_an_unplug_does_not_end_the_transaction(
    core: StationCore, esp: RecordingController
) -> None:
    configure(core, "StopTxOnEVSideDisconnect", "false")
    core.request_start(1, "TOKEN1", "ISO14443", trigger="Authorized")
    esp.plug()
    await settle()
    tx = core.connectors[1].transaction
    esp.unplug()
    await settle()
    assert core.connectors[1].transaction is tx and tx is not None and tx.authorized
    esp.plug()  # the EV comes back: the same transaction goes on
    await settle()
    assert core.connectors[1].transaction is tx
    assert core.request_stop(connector_id=1)
    assert core.connectors[1].transaction is None


@pytest.mark.parametrize("value", ["ParkingBayOccupancy", "EVConnected,DataSigned", ""])
async def test_points_the_station_cannot_detect_are_refused(core: StationCore, value: str) -> None:
    entry = core.device_model.entry("TxCtrlr", "TxStartPoint")
    result = core.device_model.write(entry, value)
    assert result.status == Status.REJECTED
    assert core.device_model.value("TxCtrlr", "TxStartPoint") == "PowerPathClosed"
