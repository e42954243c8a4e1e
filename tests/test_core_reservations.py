"""Reservations in the core: who may start, what the connector shows, how they end, and restarts."""

from __future__ import annotations

import asyncio
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from station.core.clock import Clock
from station.core.model import ConnectorStatus
from station.core.reservations import Reservation
from station.core.station import StationCore
from station.core.store import Store
from tests.core_helpers import RecordingController, core, esp, settle, store  # noqa: F401 — fixtures


def later(seconds: float = 3600) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


def reservation(rid: int = 7, connector_id: int | None = 1, token: str = "RESERVED", group: str | None = None,
                expires_at: str | None = None, connector_type: str | None = None) -> Reservation:
    return Reservation(rid, connector_id, token, "ISO14443", group, expires_at or later(), connector_type)


async def test_a_reserved_connector_shows_reserved_and_only_its_token_starts_there(
        core: StationCore, esp: RecordingController, store: Store) -> None:
    assert core.reservations.reserve(reservation()) == "Accepted"
    assert core.connectors[1].derived.status == ConnectorStatus.RESERVED
    assert core.connectors[1].to_json()["reservation"]["id"] == 7
    ok, reason = core.request_start(1, "SOMEONE", "ISO14443")
    assert not ok and "reserved" in reason
    assert core.request_start(1, "RESERVED", "ISO14443") == (True, "accepted")
    esp.plug()
    await settle()
    started = store.pending_outbox(10)[0]
    assert started.kind == "started" and started.data["reservation_id"] == 7
    assert core.reservations.by_id == {} and store.reservations() == []


async def test_a_token_of_the_reservations_group_may_use_it(core: StationCore, esp: RecordingController) -> None:
    core.store.local_list_update(1, {"FAMILY": ("Accepted", None, "HOUSE")}, full=True)
    core.reservations.reserve(reservation(group="HOUSE"))
    assert core.request_start(1, "FAMILY", "ISO14443") == (True, "accepted")


@pytest.mark.parametrize(("prepare", "expected"), [
    ("plugged", "Occupied"), ("inoperative", "Unavailable"), ("faulted", "Faulted"), ("disabled", "Rejected"),
])
async def test_reserve_now_answers_with_the_connectors_state(core: StationCore, esp: RecordingController,
                                                            prepare: str, expected: str) -> None:
    if prepare == "plugged":
        esp.plug()
    elif prepare == "inoperative":
        core.set_availability(1, False)
    elif prepare == "faulted":
        core.on_controller_link(1, False, "test")
    else:
        core.auth.settings.set("ReservationCtrlr", "Enabled", False)  # type: ignore[attr-defined]
    assert core.reservations.reserve(reservation()) == expected
    assert core.reservations.by_id == {}


async def test_reserve_now_for_an_unknown_connector_or_connector_type_is_rejected(
        core: StationCore, esp: RecordingController) -> None:
    assert core.reservations.reserve(reservation(connector_id=9)) == "Rejected"
    assert core.reservations.reserve(reservation(connector_id=None, connector_type="cCCS2")) == "Rejected"
    assert core.reservations.reserve(reservation(expires_at=(datetime.now(UTC) - timedelta(seconds=1)).isoformat())) == "Rejected"


async def test_a_reservation_with_the_same_id_replaces_the_previous_one(core: StationCore, esp: RecordingController) -> None:
    core.reservations.reserve(reservation(token="FIRST"))
    assert core.reservations.reserve(reservation(token="SECOND")) == "Accepted"
    assert [r.id_token for r in core.reservations.by_id.values()] == ["SECOND"]


async def test_a_reservation_for_any_connector_holds_the_last_free_one(core: StationCore, esp: RecordingController) -> None:
    assert core.reservations.reserve(reservation(connector_id=None)) == "Accepted"
    assert core.connectors[1].derived.status == ConnectorStatus.RESERVED
    assert not core.request_start(None, "SOMEONE", "ISO14443")[0]
    assert core.request_start(None, "RESERVED", "ISO14443")[0]


async def test_reservations_for_any_connector_can_be_switched_off(core: StationCore, esp: RecordingController) -> None:
    core.auth.settings.set("ReservationCtrlr", "NonEvseSpecific", False)  # type: ignore[attr-defined]
    assert core.reservations.reserve(reservation(connector_id=None)) == "Rejected"


async def test_with_two_connectors_an_any_reservation_leaves_one_for_others(store: Store) -> None:
    core = StationCore(store=store, clock=Clock(trusted=True), connector_ids=(1, 2))
    RecordingController.attached(core, 1)
    RecordingController.attached(core, 2)
    assert core.reservations.reserve(reservation(connector_id=None)) == "Accepted"
    assert {c.derived.status for c in core.connectors.values()} == {ConnectorStatus.AVAILABLE}
    assert core.request_start(1, "SOMEONE", "ISO14443")[0]
    core.tick()
    assert core.connectors[2].derived.status == ConnectorStatus.RESERVED
    assert not core.request_start(2, "ANOTHER", "ISO14443")[0]
    await core.close()


async def test_a_cancelled_reservation_frees_the_connector(core: StationCore, esp: RecordingController) -> None:
    core.reservations.reserve(reservation())
    assert core.reservations.cancel(7) is True
    assert core.reservations.cancel(7) is False
    assert core.connectors[1].derived.status == ConnectorStatus.AVAILABLE


async def test_a_reservation_expires_on_the_tick_after_its_time(core: StationCore, esp: RecordingController) -> None:
    core.reservations.reserve(reservation(expires_at=later(0.3)))
    with core.events.subscribe() as events:
        await asyncio.sleep(0.35)
        core.tick()
        kinds = []
        while not events.queue.empty():
            kinds.append(events.queue.get_nowait())
    assert [e.data["status"] for e in kinds if e.kind == "reservation"] == ["Expired"]
    assert core.connectors[1].derived.status == ConnectorStatus.AVAILABLE


async def test_making_the_connector_inoperative_removes_its_reservation(core: StationCore, esp: RecordingController) -> None:
    core.reservations.reserve(reservation())
    with core.events.subscribe() as events:
        core.set_availability(1, False)
        statuses = [e.data["status"] for e in [events.queue.get_nowait() for _ in range(events.queue.qsize())]
                    if e.kind == "reservation"]
    assert statuses == ["Removed"]


async def test_a_reservation_survives_a_restart(tmp_path: Path) -> None:
    core = StationCore(store=Store(tmp_path / "s.db"), clock=Clock(trusted=True))
    RecordingController.attached(core)
    core.reservations.reserve(reservation())
    await core.close()
    again = StationCore(store=Store(tmp_path / "s.db"), clock=Clock(trusted=True))
    RecordingController.attached(again)
    assert again.connectors[1].derived.status == ConnectorStatus.RESERVED
    assert not again.request_start(1, "SOMEONE", "ISO14443")[0]
    await again.close()


async def test_the_reserved_token_authorized_frees_the_connector_before_the_plug(
        core: StationCore, esp: RecordingController, store: Store) -> None:
    core.reservations.reserve(reservation())
    assert core.request_start(1, "RESERVED", "ISO14443") == (True, "accepted")
    assert core.connectors[1].derived.status == ConnectorStatus.AVAILABLE  # TC_H_01: no longer Reserved
    assert core.reservations.by_id == {}
    esp.plug()
    await settle()
    assert store.pending_outbox(10)[0].data["reservation_id"] == 7


async def test_a_connector_gone_faulted_loses_its_reservation_after_its_status(
        core: StationCore, esp: RecordingController) -> None:
    core.reservations.reserve(reservation())
    with core.events.subscribe() as events:
        core.on_controller_link(1, False, "no frame for 3 s")
        seen = [(e.kind, e.data.get("status") or e.data.get("connector", {}).get("status"))
                for e in [events.queue.get_nowait() for _ in range(events.queue.qsize())]
                if e.kind in ("connector", "reservation")]
    assert seen == [("connector", "Faulted"), ("reservation", "Removed")]
    assert core.reservations.by_id == {}


async def test_a_reservation_for_a_connector_type_the_station_has_is_accepted(
        core: StationCore, esp: RecordingController) -> None:
    assert core.reservations.reserve(reservation(connector_id=None, connector_type="sType2")) == "Accepted"
    core.device_model.set("Connector", "ConnectorType", "cType2", evse=1, connector=1)
    assert core.reservations.reserve(reservation(rid=8, connector_id=None, connector_type="sType2")) == "Rejected"


async def test_an_unspecified_reservation_when_the_only_connector_is_reserved_is_occupied(
        core: StationCore, esp: RecordingController) -> None:
    core.reservations.reserve(reservation())
    assert core.reservations.reserve(reservation(rid=8, connector_id=None, token="OTHER")) == "Occupied"
    assert core.reservations.reserve(reservation(rid=9, token="OTHER")) == "Occupied"


TOKENS = ("A", "B", "C", "D")
operations = st.lists(st.one_of(
    st.tuples(st.just("reserve"), st.sampled_from((None, 1, 2, 3)), st.sampled_from(TOKENS)),
    st.tuples(st.just("start"), st.sampled_from((None, 1, 2, 3)), st.sampled_from(TOKENS)),
    st.tuples(st.just("cancel"), st.integers(0, 8), st.just("")),
), max_size=12)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations)
def test_no_sequence_of_reservations_and_starts_strands_a_reservations_token(tmp_path: Path,
                                                                             ops: list[tuple[str, int | None, str]]) -> None:
    """Whatever others reserve and start, every reservation's own token can still start somewhere."""
    async def run() -> None:
        with tempfile.TemporaryDirectory(dir=tmp_path) as directory:
            core = StationCore(store=Store(Path(directory) / "s.db"), clock=Clock(trusted=True), connector_ids=(1, 2, 3))
            for cid in (1, 2, 3):
                RecordingController.attached(core, cid)
            for rid, (op, cid, token) in enumerate(ops):
                if op == "reserve":
                    core.reservations.reserve(reservation(rid=rid, connector_id=cid, token=token))
                elif op == "start":
                    core.request_start(cid, token, "ISO14443")
                else:
                    core.reservations.cancel(cid or 0)
                core.tick()
                for r in core.reservations.by_id.values():
                    assert core.start_refusal(r.connector_id, r.id_token) is None, (r, ops)
            await core.close()

    asyncio.run(run())
