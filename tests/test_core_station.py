"""The core's transaction lifecycle against a recording controller and a real SQLite store."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from station.core.clock import Clock
from station.core.model import ConnectorStatus, MeterReading
from station.core.station import StationCore
from station.core.store import Store
from tests.core_helpers import RecordingController, core, esp, settle, store  # noqa: F401 — fixtures


def outbox(store: Store) -> list[tuple[str, int, str]]:
    return [(e.kind, e.seq_no, e.trigger) for e in store.pending_outbox(1000)]


async def test_first_valid_report_brings_the_connector_available(core: StationCore, esp: RecordingController) -> None:
    assert core.connectors[1].derived.status == ConnectorStatus.AVAILABLE


async def test_remote_start_then_plug_in_starts_a_transaction_and_authorizes_the_controller(
    core: StationCore, esp: RecordingController, store: Store
) -> None:
    assert core.request_start(1, "TOKEN1") == (True, "accepted")
    esp.plug()
    await settle()
    tx = core.connectors[1].transaction
    assert tx is not None and tx.id_token == "TOKEN1"
    assert ("authorize", None) in esp.commands
    assert outbox(store)[0] == ("started", 0, "RemoteStart")


async def test_remote_start_with_vehicle_plugged_commits_started_and_charging_state_together(
    core: StationCore, esp: RecordingController, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    esp.plug()
    await settle()
    commits: list[str] = []
    real = store.transaction

    def counting(what: str):  # type: ignore[no-untyped-def]
        commits.append(what)
        return real(what)

    monkeypatch.setattr(store, "transaction", counting)
    core.request_start(1, "TOKEN1")
    assert outbox(store) == [("started", 0, "RemoteStart"), ("updated", 1, "ChargingStateChanged")]
    assert commits == ["record transaction events"]  # one fsync before the controller may be told


async def test_controller_is_authorized_after_the_start_is_stored_and_before_events_are_relayed(
    core: StationCore, esp: RecordingController, store: Store
) -> None:
    esp.plug()
    await settle()
    stored_when_commanded: list[list[tuple[str, int, str]]] = []
    real_authorize = esp.authorize

    async def authorize() -> None:
        stored_when_commanded.append(outbox(store))
        await real_authorize()

    esp.authorize = authorize  # type: ignore[method-assign]
    commands_seen_by_subscriber: list[list[tuple[str, int | None]]] = []
    with core.events.subscribe() as events:
        async def first_event() -> None:
            await events.get()
            commands_seen_by_subscriber.append(list(esp.commands))

        listener = asyncio.create_task(first_event())
        await settle()
        core.request_start(1, "TOKEN1")
        await asyncio.wait_for(listener, 5)
    assert stored_when_commanded[0][0] == ("started", 0, "RemoteStart")
    assert ("authorize", None) in commands_seen_by_subscriber[0]


async def test_vehicle_asking_for_charge_makes_the_connector_charging(
    core: StationCore, esp: RecordingController, store: Store
) -> None:
    core.request_start(1, "TOKEN1")
    esp.plug()
    await settle()
    esp.ev_requests_charge()
    await settle()
    assert core.connectors[1].derived.status == ConnectorStatus.CHARGING
    assert ("updated", 1, "ChargingStateChanged") in outbox(store)


async def test_unplug_ends_the_transaction_with_ev_disconnected(
    core: StationCore, esp: RecordingController, store: Store
) -> None:
    core.request_start(1, "TOKEN1")
    esp.plug()
    await settle()
    tx_id = core.connectors[1].transaction.id  # type: ignore[union-attr]
    esp.unplug()
    await settle()
    assert core.connectors[1].transaction is None
    assert store.get_transaction(tx_id).stop_reason == "EVDisconnected"  # type: ignore[union-attr]
    assert outbox(store)[-1][0] == "ended"


async def test_remote_stop_opens_the_relay_and_ends_the_transaction(
    core: StationCore, esp: RecordingController, store: Store
) -> None:
    core.request_start(1, "TOKEN1")
    esp.plug()
    esp.ev_requests_charge()
    await settle()
    tx_id = core.connectors[1].transaction.id  # type: ignore[union-attr]
    assert core.request_stop(tx_id)
    await settle()
    assert esp.commands[-1] == ("stop", None)
    assert not esp.current.relay_closed
    assert core.connectors[1].derived.status == ConnectorStatus.FINISHING


async def test_seq_numbers_are_contiguous_per_transaction(
    core: StationCore, esp: RecordingController, store: Store
) -> None:
    core.request_start(1, "TOKEN1")
    esp.plug()
    await settle()
    esp.ev_requests_charge()
    await settle()
    core.meter_value_seconds = 0
    core.tick()
    esp.unplug()
    await settle()
    assert [seq for _, seq, _ in outbox(store)] == list(range(len(outbox(store))))


async def test_meter_energy_is_recorded_at_start_and_stop(
    core: StationCore, esp: RecordingController, store: Store
) -> None:
    core.on_meter_reading(MeterReading(energy_import_wh=1000.0))
    core.request_start(1, "T")
    esp.plug()
    await settle()
    core.on_meter_reading(MeterReading(energy_import_wh=1500.0))
    tx_id = core.connectors[1].transaction.id  # type: ignore[union-attr]
    core.request_stop(tx_id)
    assert store.get_transaction(tx_id).energy_wh == 500.0  # type: ignore[union-attr]


async def test_limit_below_six_amps_withholds_authorization(core: StationCore, esp: RecordingController) -> None:
    core.set_limit(1, 0, "csms")
    core.request_start(1, "T")
    esp.plug()
    await settle()
    assert ("authorize", None) not in esp.commands
    assert core.connectors[1].derived.status == ConnectorStatus.SUSPENDED_EVSE


async def test_limit_is_offered_to_the_controller_before_authorizing(
    core: StationCore, esp: RecordingController
) -> None:
    core.set_limit(1, 16.7, "csms")
    core.request_start(1, "T")
    esp.plug()
    await settle()
    assert esp.commands[:2] == [("current", 16), ("authorize", None)]


async def test_inoperative_during_a_transaction_is_scheduled(core: StationCore, esp: RecordingController) -> None:
    core.request_start(1, "T")
    esp.plug()
    await settle()
    assert core.set_availability(1, False) == "Scheduled"
    core.request_stop(connector_id=1)
    await settle()
    assert core.connectors[1].operative is False


async def test_link_loss_faults_the_connector_and_keeps_the_transaction(
    core: StationCore, esp: RecordingController
) -> None:
    core.request_start(1, "T")
    esp.plug()
    await settle()
    core.on_controller_link(1, False, "silence")
    assert core.connectors[1].derived.status == ConnectorStatus.FAULTED
    assert core.connectors[1].transaction is not None


async def test_a_link_that_never_came_up_reports_why(store: Store) -> None:
    core = StationCore(store=store, clock=Clock(trusted=True))
    core.on_controller_link(1, False, "cannot open /dev/ttyUSB0: no such file")
    assert core.connectors[1].link_reason == "cannot open /dev/ttyUSB0: no such file"


async def test_open_transaction_survives_a_restart(store: Store, tmp_path: Path) -> None:
    core = StationCore(store=store, clock=Clock(trusted=True))
    esp = RecordingController.attached(core)
    core.request_start(1, "T")
    esp.plug()
    await settle()
    tx_id = core.connectors[1].transaction.id  # type: ignore[union-attr]
    await core.close()
    store.close()
    again = StationCore(store=Store(tmp_path / "station.db"), clock=Clock(trusted=True))
    assert again.connectors[1].transaction is not None
    assert again.connectors[1].transaction.id == tx_id


async def test_offline_flag_follows_the_csms_link(core: StationCore, esp: RecordingController, store: Store) -> None:
    core.set_csms_online(False)
    core.request_start(1, "T")
    esp.plug()
    await settle()
    assert store.pending_outbox()[0].offline is True


async def test_start_on_busy_connector_is_refused(core: StationCore, esp: RecordingController) -> None:
    core.request_start(1, "A")
    assert core.request_start(1, "B") == (False, "connector busy")


async def test_a_meter_verdict_change_is_core_state_and_one_event_for_subscribers(core: StationCore) -> None:
    with core.events.subscribe() as sub:
        core.on_meter_health(False, "3 polls in a row failed: no answer")
        core.on_meter_health(False, "4 polls in a row failed: no answer")  # no news: no second event
        core.on_meter_health(True, "valid reading")
        events = [sub.queue.get_nowait() for _ in range(sub.queue.qsize())]
    assert [(e.kind, e.data["healthy"]) for e in events] == [("meter_health", False), ("meter_health", True)]
    assert core.snapshot()["meter_health"]["healthy"] is True


async def test_a_dead_meter_shows_as_power_meter_failure_without_stopping_the_connector(
        core: StationCore, esp: RecordingController) -> None:
    core.on_meter_health(False, "no answer for 3 polls")
    conn = core.connectors[1]
    assert (conn.derived.status, conn.derived.error_code) == (ConnectorStatus.AVAILABLE, "PowerMeterFailure")
    core.on_meter_health(True, "answers again")
    assert (conn.derived.status, conn.derived.error_code) == (ConnectorStatus.AVAILABLE, "NoError")


async def test_no_periodic_meter_values_while_the_meter_does_not_answer(
    core: StationCore, esp: RecordingController, store: Store
) -> None:
    """The last reading would go out with a fresh timestamp: 22 kW 'measured' by a dead meter."""
    core.on_meter_reading(MeterReading(energy_import_wh=1000.0, power_w=22_000.0))
    core.request_start(1, "TOKEN1")
    esp.plug()
    esp.ev_requests_charge()
    await settle()
    core.meter_value_seconds = 0
    core.on_meter_health(False, "3 polls in a row failed")
    before = len(outbox(store))
    core.tick()
    assert [t for _, _, t in outbox(store)[before:]] == []
    core.on_meter_health(True, "reading again")
    core.on_meter_reading(MeterReading(energy_import_wh=1100.0, power_w=22_000.0))
    core.tick()
    assert "MeterValuePeriodic" in [t for _, _, t in outbox(store)[before:]]
