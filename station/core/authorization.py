"""Who may charge: one decision for every path a token enters (local API, IPC, RFID reader, remote start).

OCPP 2.0.1 C01-C15 / 1.6 §3.5 in one place, protocol-neutral:

* online, `LocalPreAuthorize` and the token Accepted in the local list (or the cache): start without
  asking; otherwise `Authorize` to the CSMS and its answer goes into the cache;
* offline (or the CSMS does not answer, or `DisableRemoteAuthorization`): with `LocalAuthorizeOffline`
  the local list, then the cache, decide; a token known to neither starts only with
  `OfflineTxForUnknownIdEnabled` (1.6 AllowOfflineTxForUnknownId), while offline;
* the CSMS's verdict on a started transaction's token (TransactionEventResponse idTokenInfo,
  StartTransaction.conf idTagInfo) updates the cache; when not Accepted the transaction is ended
  (`StopTxOnInvalidId`) or it may draw `MaxEnergyOnInvalidId` Wh more before the EVSE suspends it;
* a transaction may be stopped by its own token or by another one of the same group (groupIdToken,
  1.6 parentIdTag).

The settings come through `Settings`: the device model, where they are declared
(`station/core/standard_variables.py`, AUTH); the pure functions
`before_csms` and `without_csms` hold the decision so it can be tested exhaustively.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from station.core.store import AuthEntry, StoreError

if TYPE_CHECKING:
    from station.core.station import AuthResult, Connector, StationCore

log = structlog.get_logger(__name__)

CACHE_MAX_ENTRIES = 1000
"""Authorization cache bound; beyond it AuthCacheCtrlr.Policy chooses who leaves."""
INVALID_ID_LIMIT = "invalid_id"
"""The limit source that suspends a transaction whose token the CSMS refused (MaxEnergyOnInvalidId)."""


class Settings(Protocol):
    """Reads one setting's current (Actual) value."""

    def get(self, component: str, variable: str) -> Any: ...


# ----------------------------------------------------------------------------------- the decision
@dataclass(frozen=True, slots=True)
class Flags:
    """The settings the decision depends on (AuthCtrlr, AuthCacheCtrlr.Enabled, LocalAuthListCtrlr.Enabled)."""

    enabled: bool = True
    local_pre_authorize: bool = True
    local_authorize_offline: bool = True
    offline_unknown: bool = False
    remote_disabled: bool = False
    cache_enabled: bool = True
    list_enabled: bool = True


@dataclass(frozen=True, slots=True)
class Decision:
    status: str
    """OCPP AuthorizationStatus: Accepted, Blocked, Expired, Invalid, Unknown, ..."""
    source: str
    """Who decided: csms, local_list, cache, offline_unknown, not_required."""
    group_id: str | None = None

    @property
    def accepted(self) -> bool:
        return self.status == "Accepted"

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "source": self.source}


def known(flags: Flags, listed: AuthEntry | None, cached: AuthEntry | None) -> tuple[AuthEntry, str] | None:
    """The local list has priority over the cache (C14.FR.xx); disabled ones are not consulted."""
    if flags.list_enabled and listed is not None:
        return listed, "local_list"
    if flags.cache_enabled and cached is not None:
        return cached, "cache"
    return None


def before_csms(flags: Flags, *, online: bool, token_type: str, listed: AuthEntry | None,
                cached: AuthEntry | None) -> Decision | None:
    """The decision taken without the CSMS, or None: ask the CSMS (Authorize)."""
    if not flags.enabled or token_type == "NoAuthorization":
        return Decision("Accepted", "not_required")
    entry = known(flags, listed, cached)
    if online and not flags.remote_disabled:
        if flags.local_pre_authorize and entry is not None and entry[0].status == "Accepted":
            return Decision("Accepted", entry[1], entry[0].group_id)
        return None
    return without_csms(flags, listed=listed, cached=cached)


def without_csms(flags: Flags, *, listed: AuthEntry | None, cached: AuthEntry | None) -> Decision:
    """Offline, or the CSMS may not (DisableRemoteAuthorization) or did not answer.

    A known token's stored status decides (LocalAuthorizeOffline; always with remote authorization
    disabled, the lists being all the station has); an unknown one starts only when
    OfflineTxForUnknownIdEnabled, and only when the CSMS can check it later.
    """
    use_lists = flags.local_authorize_offline or flags.remote_disabled
    entry = known(flags, listed, cached) if use_lists else None
    if entry is not None:
        return Decision(entry[0].status, entry[1], entry[0].group_id)
    if flags.offline_unknown and not flags.remote_disabled:
        return Decision("Accepted", "offline_unknown")
    return Decision("Unknown", "local_list" if use_lists else "offline")


def parse_utc(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def effective(entry: AuthEntry | None, now: datetime) -> AuthEntry | None:
    """An Accepted entry past its expiry date counts as Expired (C10.FR.xx, 1.6 §3.5.1)."""
    if entry is None or entry.status != "Accepted":
        return entry
    expires = parse_utc(entry.expires_at)
    if expires is not None and expires <= now:
        return AuthEntry("Expired", entry.expires_at, entry.group_id, entry.updated)
    return entry


# ----------------------------------------------------------------------------------- the service
@dataclass(frozen=True, slots=True)
class StartOutcome:
    accepted: bool
    reason: str
    decision: Decision | None = None


class Authorization:
    """The core's authorization: consults the settings, the store and (through the core) the CSMS."""

    def __init__(self, core: StationCore, settings: Settings) -> None:
        self.core = core
        self.settings = settings
        self.invalid_limits: dict[str, float] = {}
        """transaction id → Wh it may still reach (meter reading) before it is suspended."""
        for tx_id, wh in (core.store.get("invalid_id_limits", {}) or {}).items():
            self.invalid_limits[str(tx_id)] = float(wh)

    def setting(self, component: str, variable: str) -> Any:
        """A value of the device model (declared in station/core/standard_variables.py)."""
        return self.settings.get(component, variable)

    def local_list_limit(self) -> int:
        """The most tokens the local list may hold (1.6 LocalAuthListMaxLength; SendLocalList beyond: Failed)."""
        return int(self.setting("LocalAuthListCtrlr", "LocalAuthListMaxLength"))

    def flags(self) -> Flags:
        s = self.setting
        return Flags(
            enabled=bool(s("AuthCtrlr", "Enabled")),
            local_pre_authorize=bool(s("AuthCtrlr", "LocalPreAuthorize")),
            local_authorize_offline=bool(s("AuthCtrlr", "LocalAuthorizeOffline")),
            offline_unknown=bool(s("AuthCtrlr", "OfflineTxForUnknownIdEnabled")),
            remote_disabled=bool(s("AuthCtrlr", "DisableRemoteAuthorization")),
            cache_enabled=bool(s("AuthCacheCtrlr", "Enabled")),
            list_enabled=bool(s("LocalAuthListCtrlr", "Enabled")),
        )

    # ---- lookups -----------------------------------------------------------------------
    def _entries(self, id_token: str) -> tuple[AuthEntry | None, AuthEntry | None]:
        store, now = self.core.store, self.core.clock.now()
        listed = effective(store.local_list_entry(id_token), now)
        cached = store.cache_entry(id_token)
        if cached is not None and cached.updated is not None:
            lifetime = int(self.setting("AuthCacheCtrlr", "LifeTime") or 0)
            if lifetime > 0 and now.timestamp() - cached.updated > lifetime:
                self._quietly(store.cache_remove, id_token)  # stale: as if never cached
                cached = None
        return listed, effective(cached, now)

    def group_of(self, id_token: str | None) -> str | None:
        """The token's group as the local list or the cache know it."""
        if not id_token:
            return None
        listed, cached = self._entries(id_token)
        return (listed.group_id if listed else None) or (cached.group_id if cached else None)

    @staticmethod
    def _quietly(fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except StoreError:
            pass  # a full disk costs the cache, never the decision

    # ---- deciding ----------------------------------------------------------------------
    async def check(self, id_token: str, token_type: str = "ISO14443") -> Decision:
        """Is `id_token` allowed to charge now? Asks the CSMS only when the settings say so."""
        flags = self.flags()
        listed, cached = self._entries(id_token)
        online = self.core.csms_online and self.core.authorizer is not None
        decision = before_csms(flags, online=online, token_type=token_type, listed=listed, cached=cached)
        if decision is None:
            result = await self.core.authorizer.authorize(id_token, token_type) if self.core.authorizer else None
            if result is not None:
                self.remember(id_token, result)
                decision = Decision(result.status, "csms", result.group_id)
            else:
                decision = without_csms(flags, listed=listed, cached=cached)
        if decision.source == "cache":
            self._quietly(self.core.store.cache_used, id_token)
        log.info("authorization", token_type=token_type, status=decision.status, source=decision.source)
        return decision

    def remember(self, id_token: str, result: AuthResult) -> None:
        """Put the CSMS's answer about a token into the cache (Authorize, TransactionEvent, StartTransaction)."""
        if not id_token or not self.setting("AuthCacheCtrlr", "Enabled"):
            return
        self._quietly(lambda: self.core.store.cache_put(
            id_token, result.status, result.expires_at, result.group_id, max_entries=CACHE_MAX_ENTRIES,
            policy=str(self.setting("AuthCacheCtrlr", "Policy") or "LRU")))

    # ---- entry points ------------------------------------------------------------------
    async def start(self, connector_id: int | None, id_token: str, token_type: str, *, trigger: str = "Authorized",
                    remote_start_id: int | None = None) -> StartOutcome:
        """Authorize, then start a session (local API, IPC, the RFID reader, a remote start to authorize)."""
        # Reservations are checked after the token: Authorize may tell its group (TC_H_19).
        refusal = self.core.start_refusal(connector_id, id_token, self.group_of(id_token), reservations=False)
        if refusal is not None:
            return StartOutcome(False, refusal)
        decision = await self.check(id_token, token_type)
        if not decision.accepted:
            return StartOutcome(False, f"token not authorized ({decision.status}, {decision.source})", decision)
        ok, reason = self.core.request_start(connector_id, id_token, token_type, remote_start_id=remote_start_id,
                                             trigger=trigger, group_id=decision.group_id)
        return StartOutcome(ok, reason, decision)

    async def present(self, id_token: str, token_type: str = "ISO14443", connector_id: int | None = None) -> dict[str, Any]:
        """A token held to the reader: it stops the transaction it (or its group) owns, else it starts one.

        This is what an RFID reader driver calls; IPC (`present_token`) lets a technician do the same.
        """
        for conn in self._candidates_to_stop(connector_id):
            tx = conn.transaction
            assert tx is not None
            if await self.may_stop(tx.id_token, id_token, token_type):
                self.core.request_stop(tx.id, reason="Local", trigger="StopAuthorized", stop_token=(id_token, token_type))
                return {"action": "stopped", "connector_id": conn.id, "transaction_id": tx.id}
        if connector_id is not None and self._candidates_to_stop(connector_id):
            return {"action": "refused", "connector_id": connector_id,
                    "reason": "this token may not stop the transaction on this connector"}
        outcome = await self.start(connector_id, id_token, token_type, trigger="Authorized")
        return {"action": "started" if outcome.accepted else "refused", "connector_id": connector_id,
                "reason": outcome.reason,
                "authorization": outcome.decision.to_json() if outcome.decision else None}

    def _candidates_to_stop(self, connector_id: int | None) -> list[Connector]:
        """Connectors whose transaction has a token (one opened by the plug alone, TxStartPoint
        EVConnected, is waiting for a token to authorize it, not to stop it)."""
        conns = self.core.connectors.values() if connector_id is None else [self.core.connectors[connector_id]]
        return [c for c in conns if c.transaction is not None and c.transaction.id_token is not None]

    async def may_stop(self, owner: str | None, id_token: str, token_type: str = "ISO14443") -> bool:
        """The same token, or a valid one of the same group (C01.FR.03/C09, 1.6 parentIdTag).

        A presented token the local list and the cache do not know as Accepted is sent to the CSMS
        (Authorize, TC_C_04): its answer gives the group; a refused token never stops anything.
        """
        if owner is None or id_token == owner:
            return True
        group = self.group_of(owner)
        listed, cached = self._entries(id_token)
        entry = known(self.flags(), listed, cached)
        presented = entry[0].group_id if entry is not None and entry[0].status == "Accepted" else None
        if presented is None and self.core.csms_online and self.core.authorizer is not None:
            result = await self.core.authorizer.authorize(id_token, token_type)
            if result is not None:
                self.remember(id_token, result)
                presented = result.group_id if result.status == "Accepted" else None
        return group is not None and presented == group

    # ---- the CSMS's verdict on a started transaction ----------------------------------
    def on_transaction_token(self, transaction_id: str, result: AuthResult, id_token: str | None = None) -> str:
        """TransactionEventResponse.idTokenInfo / Start- or StopTransaction.conf idTagInfo; what was done.

        `id_token`: the token the message named (an ended transaction is no longer in the core).
        """
        conn = next((c for c in self.core.connectors.values()
                     if c.transaction and c.transaction.id == transaction_id), None)
        tx = conn.transaction if conn else None
        token = id_token or (tx.id_token if tx is not None else None)
        if token:
            self.remember(token, result)
        if result.status == "Accepted" or conn is None or tx is None:
            return "none"
        if self.setting("TxCtrlr", "StopTxOnInvalidId"):
            self.core.request_stop(tx.id, reason="DeAuthorized", trigger="Deauthorized")
            log.warning("transaction stopped: the CSMS refused its token", transaction_id=tx.id, status=result.status)
            return "stopped"
        allowance = float(self.setting("TxCtrlr", "MaxEnergyOnInvalidId") or 0)
        start = tx.meter_start_wh if tx.meter_start_wh is not None else (
            conn.last_meter.energy_import_wh if conn.last_meter else 0.0)
        self.invalid_limits[tx.id] = start + allowance
        self._save_invalid_limits()
        log.warning("the CSMS refused a running transaction's token: energy limited", transaction_id=tx.id,
                    status=result.status, max_energy_wh=allowance)
        self.enforce_energy(conn)
        return "limited"

    def enforce_energy(self, conn: Connector) -> None:
        """Suspend (0 A, SuspendedEVSE) a refused token's transaction once it drew MaxEnergyOnInvalidId."""
        tx = conn.transaction
        if tx is None or tx.id not in self.invalid_limits or INVALID_ID_LIMIT in conn.limits:
            return
        drawn = conn.last_meter.energy_import_wh if conn.last_meter else None
        if drawn is None or drawn >= self.invalid_limits[tx.id]:
            log.warning("transaction suspended: MaxEnergyOnInvalidId reached", transaction_id=tx.id)
            self.core.set_limit(conn.id, 0.0, INVALID_ID_LIMIT)

    def transaction_ended(self, conn: Connector, transaction_id: str) -> None:
        if self.invalid_limits.pop(transaction_id, None) is not None:
            self._save_invalid_limits()
        conn.limits.pop(INVALID_ID_LIMIT, None)

    def _save_invalid_limits(self) -> None:
        self._quietly(self.core.store.put, "invalid_id_limits", self.invalid_limits)
