"""Reservations and authorization over OCPP, in both versions, against the real core, store and dev CSMS."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.ocpp_helpers import Rig, eventually, rig_on_dev_csms


@pytest.fixture(params=["201", "16"])
async def rig(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    async with rig_on_dev_csms(request.param, tmp_path / "station.db") as rig:
        yield rig


def soon(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def reserve(rig: Rig, rid: int, connector: int, token: str, expires: str, group: str | None = None) -> dict[str, Any]:
    if rig.version == "201":
        payload: dict[str, Any] = {"id": rid, "expiryDateTime": expires, "idToken": {"idToken": token, "type": "ISO14443"}}
        if connector:
            payload["evseId"] = connector
        if group:
            payload["groupIdToken"] = {"idToken": group, "type": "Central"}
        return await rig.csms.call("CP", "ReserveNow", payload)
    payload = {"reservationId": rid, "connectorId": connector, "expiryDate": expires, "idTag": token}
    if group:
        payload["parentIdTag"] = group
    return await rig.csms.call("CP", "ReserveNow", payload)


def status_key(rig: Rig) -> str:
    return "connectorStatus" if rig.version == "201" else "status"


async def test_reserve_now_shows_reserved_and_cancel_reservation_frees_the_connector(rig: Rig) -> None:
    mark = rig.csms.mark()
    assert (await reserve(rig, 11, 1, "RES-TAG", soon(600)))["status"] == "Accepted"
    await rig.csms.wait_for("StatusNotification", predicate=lambda r: r.payload[status_key(rig)] == "Reserved", since=mark)
    assert (await rig.csms.call("CP", "CancelReservation", {"reservationId": 11}))["status"] == "Accepted"
    await rig.csms.wait_for("StatusNotification", predicate=lambda r: r.payload[status_key(rig)] == "Available", since=mark)
    assert (await rig.csms.call("CP", "CancelReservation", {"reservationId": 11}))["status"] == "Rejected"


async def test_a_reserved_connector_starts_only_for_its_token_and_the_start_names_the_reservation(rig: Rig) -> None:
    assert rig.core is not None and rig.esp is not None
    await reserve(rig, 12, 1, "RES-TAG", soon(600))
    refused = await rig.core.auth.start(1, "OTHER", "ISO14443")
    assert not refused.accepted and "reserved" in refused.reason
    assert (await rig.core.auth.start(1, "RES-TAG", "ISO14443")).accepted
    rig.esp.plug()
    action = "TransactionEvent" if rig.version == "201" else "StartTransaction"
    started = await rig.csms.wait_for(action, predicate=lambda r: r.payload.get("eventType", "Started") == "Started")
    assert started.payload["reservationId"] == 12


async def test_an_expired_reservation_is_reported_and_the_connector_is_available_again(rig: Rig) -> None:
    assert rig.core is not None
    mark = rig.csms.mark()
    await reserve(rig, 13, 1, "RES-TAG", soon(0.5))
    await eventually(lambda: bool(rig.core and rig.core.reservations.by_id))
    await asyncio.sleep(0.6)
    rig.core.tick()
    await rig.csms.wait_for("StatusNotification", predicate=lambda r: r.payload[status_key(rig)] == "Available", since=mark)
    if rig.version == "201":
        update = await rig.csms.wait_for("ReservationStatusUpdate", since=mark)
        assert update.payload == {"reservationId": 13, "reservationUpdateStatus": "Expired"}


async def test_reserve_now_on_connector_zero_follows_reserve_connector_zero_supported(rig: Rig) -> None:
    assert rig.core is not None
    rig.core.auth.settings.set("ReservationCtrlr", "NonEvseSpecific", False)  # type: ignore[attr-defined]
    assert (await reserve(rig, 14, 0, "RES-TAG", soon(600)))["status"] == "Rejected"
    rig.core.auth.settings.set("ReservationCtrlr", "NonEvseSpecific", True)  # type: ignore[attr-defined]
    assert (await reserve(rig, 14, 0, "RES-TAG", soon(600)))["status"] == "Accepted"


async def test_a_local_start_asks_the_csms_and_a_refused_token_does_not_start(rig: Rig) -> None:
    assert rig.core is not None
    rig.csms.tokens["BAD-TAG"] = "Blocked"
    outcome = await rig.core.auth.start(1, "BAD-TAG", "ISO14443")
    assert not outcome.accepted and outcome.decision is not None and outcome.decision.source == "csms"
    assert rig.core.connectors[1].pending is None
    assert len(rig.calls("Authorize")) == 1


async def test_a_csms_refusing_the_started_token_stops_the_transaction_and_the_controller(rig: Rig) -> None:
    assert rig.core is not None and rig.esp is not None
    rig.core.request_start(1, "LATE-BAD", "ISO14443", trigger="Authorized")
    rig.esp.plug()
    rig.esp.ev_requests_charge()
    rig.csms.tokens["LATE-BAD"] = "Invalid"
    end = "TransactionEvent" if rig.version == "201" else "StopTransaction"
    ended = await rig.csms.wait_for(end, predicate=lambda r: r.payload.get("eventType", "Ended") == "Ended")
    if rig.version == "201":
        assert ended.payload["transactionInfo"]["stoppedReason"] == "DeAuthorized"
        assert ended.payload["triggerReason"] == "Deauthorized"
    else:
        assert ended.payload["reason"] == "DeAuthorized"
    assert ("stop", None) in rig.esp.commands


async def test_remote_start_is_authorized_first_when_configured(rig: Rig) -> None:
    assert rig.core is not None
    rig.core.auth.settings.set("AuthCtrlr", "AuthorizeRemoteStart", True)  # type: ignore[attr-defined]
    rig.csms.tokens["REMOTE-BAD"] = "Invalid"
    if rig.version == "201":
        answer = await rig.csms.call("CP", "RequestStartTransaction",
                                     {"idToken": {"idToken": "REMOTE-BAD", "type": "Central"}, "remoteStartId": 5, "evseId": 1})
    else:
        answer = await rig.csms.call("CP", "RemoteStartTransaction", {"idTag": "REMOTE-BAD", "connectorId": 1})
    assert answer["status"] == "Accepted"  # answered first, authorized after (as a local presentation)
    await rig.csms.wait_for("Authorize")
    await rig.settle()
    assert rig.core.connectors[1].pending is None
    if rig.version == "201":
        await rig.csms.call("CP", "RequestStartTransaction",
                            {"idToken": {"idToken": "REMOTE-OK", "type": "Central"}, "remoteStartId": 6, "evseId": 1})
    else:
        await rig.csms.call("CP", "RemoteStartTransaction", {"idTag": "REMOTE-OK", "connectorId": 1})
    await eventually(lambda: rig.core is not None and rig.core.connectors[1].pending is not None)
    assert len(rig.calls("Authorize")) == 2


async def test_a_token_of_the_same_group_stops_the_transaction_and_the_stop_names_it(rig: Rig) -> None:
    assert rig.core is not None and rig.esp is not None
    rig.core.store.local_list_update(1, {"CARD-A": ("Accepted", None, "FLEET"), "CARD-B": ("Accepted", None, "FLEET")},
                                     full=True)
    assert (await rig.core.auth.present("CARD-A", "ISO14443", 1))["action"] == "started"
    rig.esp.plug()
    assert (await rig.core.auth.present("CARD-B", "ISO14443", 1))["action"] == "stopped"
    if rig.version == "201":
        ended = await rig.csms.wait_for("TransactionEvent", predicate=lambda r: r.payload["eventType"] == "Ended")
        assert ended.payload["idToken"] == {"idToken": "CARD-B", "type": "ISO14443"}
        assert ended.payload["triggerReason"] == "StopAuthorized"
    else:
        ended = await rig.csms.wait_for("StopTransaction")
        assert ended.payload["idTag"] == "CARD-B" and ended.payload["reason"] == "Local"
    assert rig.calls("Authorize") == []  # the local list knew both tokens and their group


async def test_a_send_local_list_beyond_the_maximum_length_fails_and_changes_nothing(rig: Rig) -> None:
    assert rig.core is not None
    rig.core.device_model.set("LocalAuthListCtrlr", "LocalAuthListMaxLength", 2)
    tags = ["T1", "T2", "T3"]
    if rig.version == "201":
        answer = await rig.csms.call("CP", "SendLocalList", {"versionNumber": 5, "updateType": "Full", "localAuthorizationList": [
            {"idToken": {"idToken": t, "type": "ISO14443"}, "idTokenInfo": {"status": "Accepted"}} for t in tags]})
    else:
        answer = await rig.csms.call("CP", "SendLocalList", {"listVersion": 5, "updateType": "Full", "localAuthorizationList": [
            {"idTag": t, "idTagInfo": {"status": "Accepted"}} for t in tags]})
    assert answer["status"] == "Failed"
    assert rig.core.store.local_list_size() == 0 and rig.core.store.local_list_version() == 0


async def test_a_remote_start_for_another_token_on_a_reserved_connector_is_rejected(rig: Rig) -> None:
    await reserve(rig, 15, 1, "RES-TAG", soon(600))
    if rig.version == "201":
        answer = await rig.csms.call("CP", "RequestStartTransaction",
                                     {"idToken": {"idToken": "OTHER", "type": "ISO14443"}, "remoteStartId": 1, "evseId": 1})
    else:
        answer = await rig.csms.call("CP", "RemoteStartTransaction", {"idTag": "OTHER", "connectorId": 1})
    assert answer["status"] == "Rejected"


async def test_a_reserved_connector_gone_faulted_reports_the_reservation_removed(rig: Rig) -> None:
    assert rig.core is not None
    mark = rig.csms.mark()
    await reserve(rig, 16, 1, "RES-TAG", soon(600))
    rig.core.on_controller_link(1, False, "no frame for 3 s")
    await rig.csms.wait_for("StatusNotification", predicate=lambda r: r.payload[status_key(rig)] == "Faulted", since=mark)
    if rig.version == "201":
        update = await rig.csms.wait_for("ReservationStatusUpdate", since=mark)
        assert update.payload == {"reservationId": 16, "reservationUpdateStatus": "Removed"}
    assert rig.core.reservations.by_id == {}


async def test_clear_cache_empties_the_cache_and_is_rejected_while_the_cache_is_disabled(rig: Rig) -> None:
    assert rig.core is not None
    rig.core.store.cache_put("CACHED", "Accepted", None)
    assert (await rig.csms.call("CP", "ClearCache", {}))["status"] == "Accepted"
    assert rig.core.store.cache_size() == 0
    rig.core.device_model.set("AuthCacheCtrlr", "Enabled", False)
    assert (await rig.csms.call("CP", "ClearCache", {}))["status"] == "Rejected"


async def test_a_reservation_expiring_while_offline_is_reported_once_back_online(rig: Rig) -> None:
    assert rig.core is not None
    await reserve(rig, 17, 1, "RES-TAG", soon(0.5))
    rig.csms.accept_subprotocols = ()
    await rig.csms.disconnect("CP")
    await eventually(lambda: rig.core is not None and not rig.core.csms_online)
    await asyncio.sleep(0.6)
    rig.core.tick()
    assert rig.core.reservations.by_id == {}
    mark = rig.csms.mark()
    rig.csms.accept_subprotocols = ("ocpp2.0.1",) if rig.version == "201" else ("ocpp1.6",)
    if rig.version == "201":
        update = await rig.csms.wait_for("ReservationStatusUpdate", since=mark, timeout=10)
        assert update.payload == {"reservationId": 17, "reservationUpdateStatus": "Expired"}
    await rig.wait_outbox_empty()  # 1.6 has no such message: the entry leaves the queue unsent


async def test_without_stop_on_invalid_id_a_refused_token_charges_up_to_max_energy_then_is_suspended(rig: Rig) -> None:
    from station.core.model import MeterReading

    assert rig.core is not None and rig.esp is not None
    if rig.version == "201":
        await rig.csms.call("CP", "SetVariables", {"setVariableData": [
            {"component": {"name": "TxCtrlr"}, "variable": {"name": "StopTxOnInvalidId"}, "attributeValue": "false"},
            {"component": {"name": "TxCtrlr"}, "variable": {"name": "MaxEnergyOnInvalidId"}, "attributeValue": "500"}]})
    else:
        await rig.csms.call("CP", "ChangeConfiguration", {"key": "StopTransactionOnInvalidId", "value": "false"})
        await rig.csms.call("CP", "ChangeConfiguration", {"key": "MaxEnergyOnInvalidId", "value": "500"})
    rig.csms.tokens["LATE-BAD"] = "Invalid"
    rig.core.on_meter_reading(MeterReading(1000.0))
    rig.core.request_start(1, "LATE-BAD", "ISO14443", trigger="Authorized")
    rig.esp.plug()
    rig.esp.ev_requests_charge()
    await eventually(lambda: rig.core is not None and "invalid_id" not in rig.core.connectors[1].limits
                     and bool(rig.core.auth.invalid_limits))
    assert rig.esp.current.relay_closed  # still charging: 500 Wh allowed
    rig.core.on_meter_reading(MeterReading(1500.0))
    await eventually(lambda: rig.esp is not None and not rig.esp.current.relay_closed)
    assert rig.core.connectors[1].transaction is not None  # suspended, not ended: the driver unplugs
    key = "connectorStatus" if rig.version == "201" else "status"
    if rig.version == "201":
        await rig.csms.wait_for("TransactionEvent", predicate=lambda r:
                                r.payload["transactionInfo"].get("chargingState") == "SuspendedEVSE")
    else:
        await rig.csms.wait_for("StatusNotification", predicate=lambda r: r.payload[key] == "SuspendedEVSE")
