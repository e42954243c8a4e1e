"""Authorization: the pure decision (exhaustively, with hypothesis) and the core's service around it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from station.core.authorization import (
    CACHE_MAX_ENTRIES,
    INVALID_ID_LIMIT,
    Flags,
    before_csms,
    effective,
    without_csms,
)
from station.core.clock import Clock
from station.core.model import ConnectorStatus, MeterReading
from station.core.station import AuthResult, StationCore
from station.core.store import AuthEntry, Store
from tests.core_helpers import RecordingController, core, esp, settle, store  # noqa: F401 — fixtures

STATUSES = ("Accepted", "Blocked", "Expired", "Invalid", "Unknown")
entries = st.one_of(st.none(), st.builds(AuthEntry, st.sampled_from(STATUSES), st.none(),
                                         st.one_of(st.none(), st.sampled_from(["G1", "G2"]))))
flag_sets = st.builds(Flags, *(st.booleans() for _ in range(7)))
token_types = st.sampled_from(["ISO14443", "Central", "Local", "NoAuthorization"])


# ------------------------------------------------------------------------------- the pure decision
@given(flag_sets, st.booleans(), token_types, entries, entries)
def test_with_authorization_disabled_every_token_is_accepted(flags: Flags, online: bool, token_type: str,
                                                             listed: AuthEntry | None, cached: AuthEntry | None) -> None:
    flags = Flags(**{**{f: getattr(flags, f) for f in Flags.__slots__}, "enabled": False})
    decision = before_csms(flags, online=online, token_type=token_type, listed=listed, cached=cached)
    assert decision is not None and decision.accepted and decision.source == "not_required"


@given(flag_sets, entries, entries)
def test_online_the_station_never_refuses_a_token_without_asking_the_csms(
        flags: Flags, listed: AuthEntry | None, cached: AuthEntry | None) -> None:
    if flags.remote_disabled or not flags.enabled:
        return
    decision = before_csms(flags, online=True, token_type="ISO14443", listed=listed, cached=cached)
    assert decision is None or decision.accepted


@given(flag_sets, entries, entries)
def test_online_local_pre_authorize_accepts_a_locally_accepted_token_without_the_csms(
        flags: Flags, listed: AuthEntry | None, cached: AuthEntry | None) -> None:
    if not flags.enabled or flags.remote_disabled:
        return
    decision = before_csms(flags, online=True, token_type="ISO14443", listed=listed, cached=cached)
    first = (listed if flags.list_enabled and listed else None) or (cached if flags.cache_enabled else None)
    if flags.local_pre_authorize and first is not None and first.status == "Accepted":
        assert decision is not None and decision.accepted
    else:
        assert decision is None


@given(flag_sets)
def test_offline_an_unknown_token_starts_only_with_offline_tx_for_unknown_id(flags: Flags) -> None:
    decision = without_csms(flags, listed=None, cached=None)
    assert decision.accepted == (flags.offline_unknown and not flags.remote_disabled)


@given(flag_sets, entries, entries)
def test_offline_the_local_list_decides_before_the_cache(flags: Flags, listed: AuthEntry | None,
                                                         cached: AuthEntry | None) -> None:
    decision = without_csms(flags, listed=listed, cached=cached)
    use_lists = flags.local_authorize_offline or flags.remote_disabled
    if use_lists and flags.list_enabled and listed is not None:
        assert (decision.status, decision.source) == (listed.status, "local_list")
    elif use_lists and flags.cache_enabled and cached is not None:
        assert (decision.status, decision.source) == (cached.status, "cache")
    else:
        assert decision.source in ("offline_unknown", "local_list", "offline")


@given(flag_sets, entries, entries)
def test_a_disabled_list_or_cache_never_decides(flags: Flags, listed: AuthEntry | None, cached: AuthEntry | None) -> None:
    decision = without_csms(flags, listed=listed, cached=cached)
    if decision.source == "local_list" and decision.status != "Unknown":
        assert flags.list_enabled
    if decision.source == "cache":
        assert flags.cache_enabled


def test_an_accepted_entry_past_its_expiry_counts_as_expired() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    entry = AuthEntry("Accepted", (now - timedelta(seconds=1)).isoformat())
    assert effective(entry, now).status == "Expired"  # type: ignore[union-attr]
    assert effective(AuthEntry("Accepted", (now + timedelta(days=1)).isoformat()), now).status == "Accepted"  # type: ignore[union-attr]


# ------------------------------------------------------------------------------- the service
class FakeCsms:
    """The core's Authorizer: answers from a table and counts the Authorize calls."""

    def __init__(self, answers: dict[str, AuthResult] | None = None) -> None:
        self.answers = answers or {}
        self.asked: list[str] = []

    async def authorize(self, id_token: str, token_type: str) -> AuthResult | None:
        self.asked.append(id_token)
        return self.answers.get(id_token, AuthResult("Invalid"))


@pytest.fixture
def csms(core: StationCore) -> FakeCsms:
    fake = FakeCsms()
    core.authorizer = fake
    core.set_csms_online(True)
    return fake


def setting(core: StationCore, component: str, variable: str, value: object) -> None:
    core.auth.settings.set(component, variable, value)  # type: ignore[attr-defined]


async def test_online_a_local_list_token_starts_without_an_authorize(core: StationCore, csms: FakeCsms) -> None:
    core.store.local_list_update(1, {"LIST1": ("Accepted", None)}, full=True)
    decision = await core.auth.check("LIST1")
    assert decision.accepted and decision.source == "local_list" and csms.asked == []


async def test_online_an_unknown_token_is_asked_of_the_csms_and_its_answer_cached(core: StationCore, csms: FakeCsms) -> None:
    csms.answers["NEW"] = AuthResult("Accepted", None, "GROUP")
    decision = await core.auth.check("NEW")
    assert decision.accepted and decision.source == "csms" and csms.asked == ["NEW"]
    entry = core.store.cache_entry("NEW")
    assert entry is not None and (entry.status, entry.group_id) == ("Accepted", "GROUP")


async def test_without_local_pre_authorize_even_a_listed_token_is_asked_of_the_csms(core: StationCore, csms: FakeCsms) -> None:
    setting(core, "AuthCtrlr", "LocalPreAuthorize", False)
    core.store.local_list_update(1, {"LIST1": ("Accepted", None)}, full=True)
    assert not (await core.auth.check("LIST1")).accepted  # the CSMS says Invalid
    assert csms.asked == ["LIST1"]


async def test_offline_a_cached_token_is_accepted_from_the_cache(core: StationCore) -> None:
    core.store.cache_put("CACHED", "Accepted", None)
    decision = await core.auth.check("CACHED")
    assert decision.accepted and decision.source == "cache"


async def test_offline_an_unknown_token_is_refused_unless_offline_tx_for_unknown_id(core: StationCore) -> None:
    assert (await core.auth.check("STRANGER")).status == "Unknown"
    setting(core, "AuthCtrlr", "OfflineTxForUnknownIdEnabled", True)
    decision = await core.auth.check("STRANGER")
    assert decision.accepted and decision.source == "offline_unknown"


async def test_a_cache_entry_older_than_its_lifetime_is_not_used(core: StationCore) -> None:
    core.store.cache_put("OLD", "Accepted", None)
    with core.store.transaction("age") as db:
        db.execute("UPDATE auth_cache SET updated=updated-100")
    setting(core, "AuthCacheCtrlr", "LifeTime", 50)
    assert (await core.auth.check("OLD")).status == "Unknown"
    assert core.store.cache_entry("OLD") is None


async def test_the_cache_keeps_at_most_its_bound_dropping_the_least_recently_used(store: Store) -> None:
    for i in range(5):
        store.cache_put(f"T{i}", "Accepted", None, max_entries=3)
    store.cache_used("T2")
    store.cache_put("T5", "Accepted", None, max_entries=3)
    assert store.cache_size() == 3
    assert store.cache_entry("T2") is not None and store.cache_entry("T5") is not None
    assert store.cache_entry("T3") is None or store.cache_entry("T4") is None
    assert CACHE_MAX_ENTRIES >= 100


async def test_an_authorized_start_reports_the_decision_and_a_refused_one_does_not_start(
        core: StationCore, csms: FakeCsms, esp: RecordingController) -> None:
    refused = await core.auth.start(1, "BAD", "ISO14443")
    assert not refused.accepted and "Invalid" in refused.reason and core.connectors[1].pending is None
    csms.answers["GOOD"] = AuthResult("Accepted")
    started = await core.auth.start(1, "GOOD", "ISO14443")
    assert started.accepted and core.connectors[1].pending is not None


async def test_a_refused_token_of_a_running_transaction_stops_it_and_the_controller(
        core: StationCore, esp: RecordingController, store: Store) -> None:
    core.request_start(1, "OFFLINE1", "ISO14443", trigger="Authorized")
    esp.plug()
    esp.ev_requests_charge()
    await settle()
    tx = core.connectors[1].transaction
    assert tx is not None
    assert core.auth.on_transaction_token(tx.id, AuthResult("Invalid")) == "stopped"
    await settle()
    assert core.connectors[1].transaction is None
    assert ("stop", None) in esp.commands
    ended = [e for e in store.pending_outbox(100) if e.kind == "ended"][0]
    assert (ended.trigger, ended.data["stop_reason"]) == ("Deauthorized", "DeAuthorized")
    assert store.cache_entry("OFFLINE1").status == "Invalid"  # type: ignore[union-attr]


async def test_without_stop_on_invalid_id_a_refused_token_may_draw_max_energy_then_is_suspended(
        core: StationCore, esp: RecordingController) -> None:
    setting(core, "TxCtrlr", "StopTxOnInvalidId", False)
    setting(core, "TxCtrlr", "MaxEnergyOnInvalidId", 500)
    core.on_meter_reading(MeterReading(1000.0))
    core.request_start(1, "OFFLINE1", "ISO14443", trigger="Authorized")
    esp.plug()
    esp.ev_requests_charge()
    await settle()
    tx = core.connectors[1].transaction
    assert tx is not None
    assert core.auth.on_transaction_token(tx.id, AuthResult("Blocked")) == "limited"
    core.on_meter_reading(MeterReading(1400.0))
    await settle()
    assert INVALID_ID_LIMIT not in core.connectors[1].limits
    core.on_meter_reading(MeterReading(1500.0))
    await settle()
    assert core.connectors[1].limits[INVALID_ID_LIMIT] == 0
    assert core.connectors[1].transaction is not None  # ended by the driver, not the station
    assert core.connectors[1].derived.status == ConnectorStatus.SUSPENDED_EVSE
    assert ("stop", None) in esp.commands


async def test_a_token_of_the_same_group_may_stop_a_transaction_and_another_may_not(
        core: StationCore, esp: RecordingController) -> None:
    core.store.local_list_update(1, {"CARD-A": ("Accepted", None, "FLEET"), "CARD-B": ("Accepted", None, "FLEET"),
                                     "CARD-X": ("Accepted", None, "OTHER")}, full=True)
    assert (await core.auth.present("CARD-A", connector_id=1))["action"] == "started"
    esp.plug()
    await settle()
    assert core.connectors[1].transaction is not None
    refused = await core.auth.present("CARD-X", connector_id=1)
    assert refused["action"] == "refused" and core.connectors[1].transaction is not None
    stopped = await core.auth.present("CARD-B", connector_id=1)
    assert stopped["action"] == "stopped" and core.connectors[1].transaction is None


async def test_the_csms_is_asked_for_the_group_of_a_token_it_alone_knows(
        core: StationCore, csms: FakeCsms, esp: RecordingController) -> None:
    core.store.local_list_update(1, {"CARD-A": ("Accepted", None, "FLEET")}, full=True)
    csms.answers["CARD-C"] = AuthResult("Accepted", None, "FLEET")
    await core.auth.present("CARD-A", connector_id=1)
    esp.plug()
    await settle()
    assert await core.auth.may_stop("CARD-A", "CARD-C") is True
    assert csms.asked == ["CARD-C"]


async def test_the_started_transaction_keeps_its_refused_energy_limit_across_a_restart(
        tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    core = StationCore(store=store, clock=Clock(trusted=True))
    esp = RecordingController.attached(core)
    setting(core, "TxCtrlr", "StopTxOnInvalidId", False)
    core.request_start(1, "T", "ISO14443", trigger="Authorized")
    esp.plug()
    await settle()
    tx = core.connectors[1].transaction
    assert tx is not None
    core.auth.on_transaction_token(tx.id, AuthResult("Invalid"))
    await core.close()
    again = StationCore(store=Store(tmp_path / "s.db"), clock=Clock(trusted=True))
    assert tx.id in again.auth.invalid_limits
    await again.close()


async def test_a_different_token_without_the_owners_group_is_asked_of_the_csms_and_does_not_stop(
        core: StationCore, csms: FakeCsms, esp: RecordingController) -> None:
    csms.answers["OWNER"] = AuthResult("Accepted")
    csms.answers["STRANGER"] = AuthResult("Accepted", None, "ELSEWHERE")
    await core.auth.present("OWNER", connector_id=1)
    esp.plug()
    await settle()
    refused = await core.auth.present("STRANGER", connector_id=1)
    assert refused["action"] == "refused" and core.connectors[1].transaction is not None
    assert csms.asked == ["OWNER", "STRANGER"]  # TC_C_04: the different token is authorized, then refused


async def test_a_blocked_token_of_the_same_group_may_not_stop(core: StationCore, esp: RecordingController) -> None:
    core.store.local_list_update(1, {"CARD-A": ("Accepted", None, "FLEET"), "CARD-B": ("Blocked", None, "FLEET")},
                                 full=True)
    await core.auth.present("CARD-A", connector_id=1)
    esp.plug()
    await settle()
    assert (await core.auth.present("CARD-B", connector_id=1))["action"] == "refused"


async def test_a_token_at_the_reader_authorizes_a_transaction_the_plug_opened(
        core: StationCore, esp: RecordingController) -> None:
    core.device_model.set("TxCtrlr", "TxStartPoint", "EVConnected")
    core.store.local_list_update(1, {"CARD-A": ("Accepted", None)}, full=True)
    esp.plug()
    await settle()
    assert core.connectors[1].transaction is not None and core.connectors[1].transaction.id_token is None
    assert (await core.auth.present("CARD-A", connector_id=1))["action"] == "started"
    await settle()
    tx = core.connectors[1].transaction
    assert tx is not None and tx.id_token == "CARD-A"


async def test_a_token_the_csms_puts_in_the_reservations_group_may_use_the_reservation(
        core: StationCore, csms: FakeCsms, esp: RecordingController) -> None:
    from datetime import UTC, datetime, timedelta

    from station.core.reservations import Reservation

    expires = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    core.reservations.reserve(Reservation(3, 1, "OWNER", "ISO14443", "FAMILY", expires))
    csms.answers["SPOUSE"] = AuthResult("Accepted", None, "FAMILY")
    csms.answers["NEIGHBOUR"] = AuthResult("Accepted", None, "OTHERS")
    refused = await core.auth.start(1, "NEIGHBOUR", "ISO14443")
    assert not refused.accepted and "reserved" in refused.reason
    started = await core.auth.start(1, "SPOUSE", "ISO14443")
    assert started.accepted and core.connectors[1].pending is not None
    assert core.connectors[1].pending.reservation_id == 3  # type: ignore[union-attr]
