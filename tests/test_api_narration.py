"""The event list tells what happened to the station, one row per happening (api/narration.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from api.narration import Narrator


def rows(*events: tuple[str, dict[str, Any]]) -> list[str]:
    narrator = Narrator()
    texts = [narrator.text({"kind": kind, "data": data}) for kind, data in events]
    return [t for t in texts if t is not None]


def test_internal_bookkeeping_is_not_a_row() -> None:
    assert rows(("message_queued", {"message": "notify_event"}), ("ocpp_message", {"action": "Heartbeat"}),
                ("meter", {"meter": {"power_w": 1.0}}), ("ipc_events_dropped", {"dropped_total": 3})) == []


def test_a_reconnect_is_one_row_with_the_version_spelled_as_everywhere() -> None:
    link = {"connected": True, "version": "16", "url": "ws://TECH:pw@csms.example/ocpp/CP1"}
    assert rows(("csms", link), ("csms", {**link, "booted": True})) == [
        "CSMS connected: OCPP 1.6J to ws://csms.example/ocpp/CP1"]


def test_repeated_failed_attempts_are_one_row_in_words() -> None:
    failed = {"connected": False, "last_error_kind": "unreachable",
              "last_error": "ConnectionRefusedError: [Errno 111] Connect call failed"}
    assert rows(("csms", {"connected": True, "version": "201"}), ("csms", failed), ("csms", failed)) == [
        "CSMS connected: OCPP 2.0.1 to no URL configured",
        "CSMS not connected: the CSMS server refuses connections: nothing answers at that address and port"]


def test_a_connector_event_that_does_not_change_its_status_is_not_a_row() -> None:
    available = {"connector_id": 1, "connector": {"status": "Available", "controller_link": {"up": True}}}
    assert rows(("connector", available), ("connector", available)) == ["connector 1: Available (free, no vehicle)"]


def test_a_faulted_connector_row_says_what_the_fault_means() -> None:
    fault = {"connector_id": 1, "connector": {"status": "Faulted", "controller_link": {"up": True},
                                              "controller_state": "FAULT_HARD", "pilot": "E"}}
    (row,) = rows(("connector", fault))
    assert row.startswith("connector 1 faulted: the charge controller reports a hard fault")


def test_sessions_start_and_end_with_token_and_energy_and_periodic_updates_are_not_rows() -> None:
    tx = {"connector_id": 1, "id_token": "****0042", "energy_wh": 7250.0, "stop_reason": "EVDisconnected"}
    assert rows(("transaction", {"event": "started", "transaction": tx}),
                ("transaction", {"event": "updated", "trigger": "MeterValuePeriodic", "transaction": tx}),
                ("transaction", {"event": "updated", "trigger": "ChargingStateChanged", "transaction": tx}),
                ("transaction", {"event": "ended", "transaction": tx})) == [
        "session started on connector 1 (token ****0042)",
        "session ended on connector 1 (EVDisconnected, 7.25 kWh)"]


def test_links_and_the_queue_are_rows_when_they_change_only() -> None:
    assert rows(("controller_link", {"connector_id": 1, "up": False, "reason": "no valid status frame for 3 s"}),
                ("controller_link", {"connector_id": 1, "up": False, "reason": "cannot open /dev/esp32: gone"}),
                ("controller_link", {"connector_id": 1, "up": True}),
                ("meter_health", {"healthy": False}), ("meter_health", {"healthy": False}),
                ("outbox", {"depth": 1}), ("outbox", {"depth": 2}), ("outbox", {"depth": 0})) == [
        "connector 1: charge controller (ESP32) sends no status: the port is open but nothing valid arrives",
        "charge controller (ESP32) of connector 1 answers",
        "energy meter stopped answering",
        "messages for the CSMS queued (not yet confirmed)",
        "all queued messages delivered to the CSMS"]


def test_after_a_daemon_restart_the_csms_connection_is_a_row_again(tmp_path: Path) -> None:
    from api.daemon_link import DaemonLink

    link = DaemonLink(tmp_path / "station.sock")
    connected = {"kind": "csms", "data": {"connected": True, "version": "201", "url": "ws://csms.example/CP1"}}
    link._on_event(dict(connected))
    link._set_reachable(True, None)
    link._set_reachable(False, "no daemon socket")
    link._set_reachable(True, None)
    link._on_event(dict(connected))
    assert [e["text"] for e in link.recent() if e["kind"] == "csms"] == [
        "CSMS connected: OCPP 2.0.1 to ws://csms.example/CP1"] * 2
