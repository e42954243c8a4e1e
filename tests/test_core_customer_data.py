"""What the station holds about a customer's token: reported, cleared durably, never logged."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from station.core.clock import Clock
from station.core.customer_data import NOTHING_STORED, CustomerData, pages
from station.core.reservations import Reservation
from station.core.station import StationCore
from station.core.store import Store
from tests.core_helpers import RecordingController, core, esp, settle, store  # noqa: F401 — fixtures

TOKEN = "DRIVER-7F3A"


def later(seconds: float = 3600) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


async def finished_session(core: StationCore, esp: RecordingController, token: str = TOKEN) -> str:
    assert core.request_start(1, token, "ISO14443") == (True, "accepted")
    esp.plug()
    await settle()
    tx = core.connectors[1].transaction
    assert tx is not None
    core.request_stop(connector_id=1, reason="Local", trigger="StopAuthorized")
    esp.unplug()
    await settle()
    assert core.connectors[1].transaction is None
    return tx.id


def test_a_token_the_station_never_saw_reports_that_nothing_is_stored(core: StationCore) -> None:
    assert CustomerData(core).report(TOKEN) == [NOTHING_STORED]


async def test_the_report_lists_cache_local_list_reservation_and_transactions(
        core: StationCore, esp: RecordingController, store: Store) -> None:
    store.cache_put(TOKEN, "Accepted", None, "FLEET")
    store.local_list_update(1, {TOKEN: ("Accepted", None)}, full=True)
    tx_id = await finished_session(core, esp)
    assert core.reservations.reserve(Reservation(5, 1, TOKEN, "ISO14443", None, later())) == "Accepted"
    lines = CustomerData(core).report(TOKEN.lower())  # IdToken is case-insensitive
    assert [line.split(":")[0] for line in lines[:4]] == ["Authorization cache", "Local authorization list",
                                                          "Reservation 5", f"Transaction {tx_id}"]
    assert all(TOKEN not in line and "FLEET" not in line for line in lines)


async def test_clear_removes_the_cache_entry_the_reservation_and_the_token_of_ended_transactions_durably(
        core: StationCore, esp: RecordingController, store: Store, tmp_path: Path) -> None:
    store.cache_put(TOKEN, "Accepted", None)
    tx_id = await finished_session(core, esp)
    assert core.reservations.reserve(Reservation(5, 1, TOKEN, "ISO14443", None, later())) == "Accepted"
    lines = CustomerData(core).clear(TOKEN)
    assert lines[:2] == ["Cleared: authorization cache entry.", "Cleared: reservation 5 (cancelled)."]
    assert "Cleared: the customer's token from 1 ended transaction(s)." in lines
    reopened = Store(tmp_path / "station.db")  # as after a power cut
    try:
        assert reopened.cache_entry(TOKEN) is None and reopened.reservations() == []
        tx = reopened.get_transaction(tx_id)
        assert tx is not None and tx.id_token is None and tx.ended_at is not None  # energy and times kept
    finally:
        reopened.close()
    # Only the session's messages not yet confirmed by a CSMS (Started, the stop's Updated, Ended) name it.
    assert CustomerData(core).report(TOKEN) == ["Messages queued for the CSMS naming this customer: 3."]


async def test_clear_keeps_the_local_list_entry_and_a_running_transaction(
        core: StationCore, esp: RecordingController, store: Store) -> None:
    store.local_list_update(1, {TOKEN: ("Accepted", None)}, full=True)
    assert core.request_start(1, TOKEN, "ISO14443") == (True, "accepted")
    esp.plug()
    await settle()
    lines = CustomerData(core).clear(TOKEN)
    assert "Kept: local authorization list entry (changed by the CSMS only)." in lines
    assert "Kept until it ends: 1 transaction in progress." in lines
    assert store.local_list_entry(TOKEN) is not None
    tx = core.connectors[1].transaction
    assert tx is not None and tx.id_token == TOKEN  # the same token still stops the charge


def test_clear_logs_what_it_removed_without_the_token(core: StationCore, store: Store) -> None:
    store.cache_put(TOKEN, "Accepted", None)
    with structlog.testing.capture_logs() as logs:
        CustomerData(core).clear(TOKEN)
    cleared = [e for e in logs if e["event"].startswith("customer data cleared")]
    assert len(cleared) == 1 and cleared[0]["cache_entries"] == 1
    assert TOKEN not in str(logs)


@pytest.mark.parametrize("limit", [40, 512])
def test_pages_keep_every_character_in_order_within_the_limit(limit: int) -> None:
    lines = [f"line {i}: " + "x" * (i * 7) for i in range(30)]
    chunks = pages(lines, limit)
    assert all(0 < len(c) <= limit for c in chunks)
    assert "".join(chunks).replace("\n", "") == "".join(lines)


@given(st.lists(st.text(alphabet="ab c", min_size=0, max_size=90), max_size=20), st.integers(10, 100))
def test_pages_never_exceed_the_limit_and_never_come_back_empty(lines: list[str], limit: int) -> None:
    chunks = pages(lines, limit)
    assert chunks and all(len(c) <= limit for c in chunks)


def test_a_store_that_cannot_be_read_refuses_the_request(tmp_path: Path) -> None:
    from station.core.customer_data import CustomerDataError

    store = Store(tmp_path / "station.db")
    core = StationCore(store=store, clock=Clock(trusted=True))
    store.close()
    with pytest.raises(CustomerDataError):
        CustomerData(core).report(TOKEN)
