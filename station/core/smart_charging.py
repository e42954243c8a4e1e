"""Installed charging profiles: persisted, evaluated over time, fed to the core as its `csms` limit.

One `SmartCharging` per `StationCore` (`core.charging`). The OCPP adapters install and clear
profiles and ask for composite schedules; this object keeps them in the state database (so a
restart keeps a site's evening cap) and runs one owned task that wakes at the next period
boundary or validity change and sets each connector's `csms` limit source to the composite.
The core then takes the lowest of its sources and the actuator offers it to the charge
controller (see `StationCore._apply` for the firmware's rule on changes while charging).

The task starts with the first running event loop that sees this object and is cancelled by
`StationCore.close()`.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog

from station.core.charging_profiles import (
    MAX_PROFILES,
    ChargingProfile,
    CompositeSchedule,
    Kind,
    Period,
    ProfileCriteria,
    Purpose,
    TxContext,
    composite_schedule,
    limit_at,
    next_change,
    select_profiles,
    validate,
)
from station.core.store import StoreError

if TYPE_CHECKING:
    from station.core.station import Connector, StationCore

log = structlog.get_logger(__name__)

STORE_KEY = "charging_profiles"
LEGACY_LIMITS_KEY = "ocpp:limits"
"""Flat per-connector limits stored before profiles were modelled; migrated once."""
MAX_SLEEP_S = 60.0
"""Re-evaluate at least this often, so a wall-clock correction (untrusted Pi clock) is followed."""
SOURCE = "csms"


class SmartCharging:
    def __init__(self, core: StationCore) -> None:
        self.core = core
        self.profiles: list[ChargingProfile] = self._load()
        self.applied: dict[int, float | None] = {}
        """What this object last set as each connector's `csms` limit (None: left alone)."""
        self.next_change: datetime | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._closed = False

    # ---- persistence ---------------------------------------------------------------
    def _load(self) -> list[ChargingProfile]:
        store = self.core.store
        profiles: list[ChargingProfile] = []
        for item in store.get(STORE_KEY, []) or []:
            try:
                profiles.append(ChargingProfile.from_json(item))
            except (KeyError, TypeError, ValueError) as exc:
                log.error("stored charging profile unreadable; dropped", error=str(exc), profile=str(item)[:200])
        legacy = store.get(LEGACY_LIMITS_KEY)
        if legacy:
            for cid, amps in legacy.items():
                profiles.append(ChargingProfile(
                    id=-int(cid), connector_id=int(cid), stack_level=0, purpose=Purpose.TX_DEFAULT,
                    kind=Kind.RELATIVE, periods=(Period(0, float(amps)),)))
            log.info("flat CSMS limits migrated to charging profiles", limits=legacy)
            self.profiles = profiles
            if self._save():
                with contextlib.suppress(StoreError):
                    store.put(LEGACY_LIMITS_KEY, None)
        return profiles

    def _save(self) -> bool:
        try:
            self.core.store.put(STORE_KEY, [p.to_json() for p in self.profiles])
        except StoreError:
            log.error("charging profiles not persisted (kept in memory)")
            return False
        return True

    # ---- commands ------------------------------------------------------------------
    def install(self, profile: ChargingProfile, *, replace_same_stack: bool = True) -> str | None:
        """Install (or replace, same id) a profile; the reason it is refused, or None when accepted.

        `replace_same_stack`: 1.6 replaces a profile with the same purpose and stack level on the
        same connector; 2.0.1 refuses the newcomer instead (K01.FR.39) unless its id is the same.
        """
        reason = validate(profile)
        if reason:
            return reason
        if profile.connector_id and profile.connector_id not in self.core.connectors:
            return f"unknown connector {profile.connector_id}"
        if profile.purpose is Purpose.TX:
            conn = self.core.connectors[profile.connector_id]
            if profile.transaction_id is None and conn.transaction is not None:
                profile = replace(profile, transaction_id=conn.transaction.id)
            if profile.transaction_id is None and conn.pending is None:
                return "no transaction on this connector"
            if profile.transaction_id is not None and (conn.transaction is None or conn.transaction.id != profile.transaction_id):
                return "not the transaction running on this connector"
        same_slot = [p for p in self.profiles if p.id != profile.id and p.purpose is profile.purpose
                     and p.stack_level == profile.stack_level and p.connector_id == profile.connector_id
                     and (p.purpose is not Purpose.TX or p.transaction_id == profile.transaction_id)]
        if same_slot and not replace_same_stack:
            return f"profile {same_slot[0].id} already has this purpose and stack level"
        gone = {p.id for p in same_slot}
        kept = [p for p in self.profiles if p.id != profile.id and p.id not in gone]
        if len(kept) >= MAX_PROFILES:
            return f"{MAX_PROFILES} profiles installed already"
        self.profiles = [p for p in self.profiles if p.id != profile.id and p.id not in gone] + [profile]
        self._save()
        log.info("charging profile installed", profile_id=profile.id, connector_id=profile.connector_id,
                 purpose=profile.purpose.value, stack_level=profile.stack_level, kind=profile.kind.value,
                 replaced=sorted(gone))
        self.reevaluate()
        return None

    def clear(self, *, profile_id: int | None = None, connector_id: int | None = None,
              purpose: Purpose | None = None, stack_level: int | None = None) -> int:
        """Remove the profile with that id, or else every profile matching all criteria given; how many."""
        def matches(p: ChargingProfile) -> bool:
            if profile_id is not None:
                return p.id == profile_id
            return ((connector_id is None or p.connector_id == connector_id)
                    and (purpose is None or p.purpose is purpose)
                    and (stack_level is None or p.stack_level == stack_level))

        gone = [p for p in self.profiles if matches(p)]
        if gone:
            self.profiles = [p for p in self.profiles if not matches(p)]
            self._save()
            log.info("charging profiles cleared", profile_ids=[p.id for p in gone])
            self.reevaluate()
        return len(gone)

    def find(self, criteria: ProfileCriteria) -> list[tuple[int, list[ChargingProfile]]]:
        """The installed profiles a CSMS asks about, per EVSE (GetChargingProfiles)."""
        return select_profiles(self.profiles, criteria)

    def composite(self, connector_id: int, duration_s: int, start: datetime | None = None) -> CompositeSchedule:
        """The composite schedule of the profiles alone (None where no profile limits)."""
        start = start or self.core.clock.now()
        conn = self.core.connectors.get(connector_id)
        return composite_schedule(self.profiles, connector_id, start, duration_s, self._tx(conn) if conn else None)

    # ---- core hooks ------------------------------------------------------------------
    def transaction_started(self, conn: Connector) -> None:
        """Bind TxProfiles that arrived with the remote start; Relative schedules start now."""
        assert conn.transaction is not None
        changed = False
        for i, p in enumerate(self.profiles):
            if p.purpose is Purpose.TX and p.connector_id == conn.id and p.transaction_id is None:
                self.profiles[i] = replace(p, transaction_id=conn.transaction.id)
                changed = True
        if changed:
            self._save()
        self.apply(quiet=True)
        self._wake.set()

    def transaction_ended(self, transaction_id: str) -> None:
        """TxProfiles end with their transaction."""
        gone = [p.id for p in self.profiles if p.purpose is Purpose.TX and p.transaction_id == transaction_id]
        if gone:
            self.profiles = [p for p in self.profiles if p.id not in gone]
            self._save()
            log.info("TxProfiles ended with their transaction", profile_ids=gone, transaction_id=transaction_id)
        self.apply(quiet=True)
        self._wake.set()

    # ---- evaluation --------------------------------------------------------------------
    def _tx(self, conn: Connector) -> TxContext | None:
        tx = conn.transaction
        if tx is None:
            return None
        try:
            started = datetime.fromisoformat(tx.started_at)
        except ValueError:
            started = self.core.clock.now()
        return TxContext(tx.id, started)

    def _drop_orphans(self) -> None:
        """TxProfiles whose transaction is gone, or that waited for a remote start that never came."""
        def orphan(p: ChargingProfile) -> bool:
            if p.purpose is not Purpose.TX:
                return False
            conn = self.core.connectors.get(p.connector_id)
            if conn is None:
                return True
            if p.transaction_id is None:
                return conn.pending is None and conn.transaction is None
            return conn.transaction is None or conn.transaction.id != p.transaction_id

        gone = [p.id for p in self.profiles if orphan(p)]
        if gone:
            self.profiles = [p for p in self.profiles if p.id not in gone]
            self._save()
            log.info("TxProfiles without their transaction removed", profile_ids=gone)

    def apply(self, now: datetime | None = None, *, quiet: bool = False) -> datetime | None:
        """Set every connector's `csms` limit to the composite now; when to look again.

        `quiet`: only update the limit, for callers inside the core's reconcile (transaction
        start/end), which goes on to act on it; otherwise the core reconciles the connector.
        """
        now = now or self.core.clock.now()
        self._drop_orphans()
        wake: datetime | None = None
        for conn in self.core.connectors.values():
            tx = self._tx(conn)
            amps = limit_at(self.profiles, conn.id, now, tx)
            if amps != self.applied.get(conn.id):
                self.applied[conn.id] = amps
                if not quiet:
                    self.core.set_limit(conn.id, amps, SOURCE)
                elif amps is None:
                    conn.limits.pop(SOURCE, None)
                else:
                    conn.limits[SOURCE] = amps
            after = next_change(self.profiles, conn.id, now, tx)
            if after is not None and (wake is None or after < wake):
                wake = after
        self.next_change = wake
        return wake

    def reevaluate(self) -> None:
        """Apply now (synchronously, so a command's effect is visible in its answer) and re-plan the task."""
        if self._closed:
            return
        self.apply()
        self.ensure_running()
        self._wake.set()

    def ensure_running(self) -> None:
        if self._closed or (self._task is not None and not self._task.done()):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # constructed outside a loop (unit tests): apply() is called directly
        self._task = loop.create_task(self._run(), name="smart-charging")

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            now = self.core.clock.now()
            try:
                wake = self.apply(now)
            except Exception:  # noqa: BLE001 — a bad profile must not end smart charging for good
                log.exception("charging profile evaluation failed")
                wake = None
            sleep = MAX_SLEEP_S
            if wake is not None:
                sleep = min(sleep, max(0.0, (wake - now).total_seconds()) + 0.001)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(sleep):
                    await self._wake.wait()

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def snapshot(self) -> dict[str, Any]:
        """For `station status` / the API: why a connector has the `csms` limit it has, and until when."""
        return {"profiles": [p.to_json() for p in self.profiles],
                "next_change": self.next_change.isoformat() if self.next_change else None}
