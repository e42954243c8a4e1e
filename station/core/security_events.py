"""Security events (OCPP 2.0.1 A04 / 1.6 security whitepaper), protocol-neutral.

Anything in the daemon that notices a security-relevant fact calls

    core.security_events.record("InvalidCsmsCertificate", "certificate verify failed: self-signed")

and is done: `record` never raises (a broken disk is logged, not propagated into the TLS or
firmware code that noticed the fact) and never blocks on the network. In ONE SQLite
transaction it writes

- a row of the local security log (table `security_log`, the newest `SECURITY_LOG_ROWS`
  kept), which GetLog SecurityLog exports: read it with `between(start, end)` or
  `export_lines(start, end)`;
- an outbox entry of kind `security_event`: the generic durable station→CSMS queue
  (`Store.append_message`, the transaction outbox with non-transaction kinds). The OCPP
  session pumps it in order with the transaction messages and sends SecurityEventNotification
  (2.0.1, and 1.6 with the security extension) once the CSMS is reachable; the entry is
  deleted only when the CSMS confirmed it, so events survive outages and kill -9.

`tech_info` is free text for the operator (at most 255 characters are sent): never put a
password, key, token or certificate body in it.

`LoginFailureBursts` turns a stream of failed local logins (the API's token checks, reported
over IPC) into one event per burst instead of one per attempt.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from station.core.clock import Clock
from station.core.events import EventBus
from station.core.store import Store, StoreError

log = structlog.get_logger(__name__)

MESSAGE_KIND = "security_event"
"""Outbox kind of a queued SecurityEventNotification."""

MESSAGE_QUEUED = "message_queued"
"""Event-bus kind that wakes the OCPP outbox pump after a non-transaction message was queued
(`Store.append_message`); publish it with `message=<outbox kind>` from any producer of such messages."""

TECH_INFO_MAX = 255
"""techInfo's maxLength in both versions' schemas."""

EVENT_TYPES: dict[str, bool] = {
    # type: critical (OCPP 2.0.1 Appendix 1 "Security Events"; the 1.6 whitepaper's list is the same)
    "FirmwareUpdated": True,
    "FailedToAuthenticateAtCsms": True,
    "CsmsFailedToAuthenticate": True,
    "SettingSystemTime": True,
    "StartupOfTheDevice": True,
    "ResetOrReboot": True,
    "SecurityLogWasCleared": True,
    "ReconfigurationOfSecurityParameters": False,
    "MemoryExhaustion": True,
    "InvalidMessages": False,
    "AttemptedReplayAttacks": False,
    "TamperDetectionActivated": True,
    "InvalidFirmwareSignature": False,
    "InvalidFirmwareSigningCertificate": False,
    "InvalidCsmsCertificate": True,
    "InvalidChargingStationCertificate": True,
    "InvalidTLSVersion": True,
    "InvalidTLSCipherSuite": True,
    "MaintenanceLoginAccepted": True,
    "MaintenanceLoginFailed": True,
}
"""Every type `record` accepts (a typo fails loudly in tests instead of reaching the CSMS).

Non-critical events are sent too: the spec requires the critical ones to be sent and all of them
to be logged; sending the rest costs a message and tells the operator more."""


@dataclass(frozen=True, slots=True)
class SecurityEvent:
    """One entry of the local security log; `at` is corrected if it was stamped before the clock was trusted."""

    id: int
    type: str
    at: datetime
    tech_info: str | None
    critical: bool

    def line(self) -> str:
        """One line of the exported security log."""
        when = self.at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        text = f"{when} {self.type}{' critical' if self.critical else ''}"
        return f"{text} {self.tech_info}" if self.tech_info else text


class SecurityEventLog:
    """The station's security events: local log + durable delivery to the CSMS (see module docstring)."""

    def __init__(self, store: Store, clock: Clock, events: EventBus) -> None:
        self.store = store
        self.clock = clock
        self.events = events

    def record(self, type_: str, tech_info: str | None = None) -> int | None:
        """Log the event and queue its SecurityEventNotification; the log row's id, None if the disk refused.

        Call it where the fact is noticed, once per occurrence. Safe from any code path: it
        neither raises on a store failure nor waits for the network.
        """
        if type_ not in EVENT_TYPES:
            raise ValueError(f"unknown security event type {type_!r}")
        info = _clean(tech_info)
        critical = EVENT_TYPES[type_]
        stamp = self.clock.stamp()
        data: dict[str, str] = {"type": type_}
        if info:
            data["tech_info"] = info
        try:
            with self.store.transaction("record security event") as db:
                row_id = self.store.append_security_log(db, stamp, type_, info, critical)
                self.store.append_message(db, MESSAGE_KIND, stamp, data)
        except StoreError:
            log.error("security event not recorded: state database refused the write", type=type_)
            return None
        (log.warning if critical else log.info)("security event", type=type_, tech_info=info)
        self.events.publish(MESSAGE_QUEUED, message=MESSAGE_KIND, type=type_)
        return row_id

    def between(self, start: datetime | None = None, end: datetime | None = None) -> list[SecurityEvent]:
        """Security log entries with start <= time <= end (either bound may be None), oldest first."""
        result: list[SecurityEvent] = []
        for row in self.store.security_log():
            at = self.clock.correct(datetime.fromisoformat(row["wall"]), row["mono"], row["boot_id"], bool(row["trusted"]))
            if (start is None or at >= start) and (end is None or at <= end):
                result.append(SecurityEvent(row["id"], row["type"], at, row["tech_info"], bool(row["critical"])))
        return result

    def export_lines(self, start: datetime | None = None, end: datetime | None = None) -> Iterator[str]:
        """The security log as text lines (GetLog SecurityLog's file)."""
        for event in self.between(start, end):
            yield event.line()


def _clean(text: str | None) -> str | None:
    """One line, at most TECH_INFO_MAX characters."""
    if not text:
        return None
    return " ".join(str(text).split())[:TECH_INFO_MAX] or None


class LoginFailureBursts:
    """Failed local logins → one security event per burst.

    A burst starts with the first failure after a quiet spell and lasts while failures keep
    arriving less than `quiet_s` apart. Its first failure raises the event at once (the operator
    learns about an attack while it runs); the rest of the burst is counted and reported in the
    next burst's techInfo instead of flooding the CSMS with one message per guess.
    """

    def __init__(self, report: Callable[[str], object], *, quiet_s: float = 60.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._report = report
        self.quiet_s = quiet_s
        self._monotonic = monotonic
        self._last: float | None = None
        self._count = 0
        self._previous_count = 0

    def failed(self, source: str, count: int = 1) -> bool:
        """Count `count` failures from `source` (e.g. "local API from 127.0.0.1"); True when an event was raised."""
        now = self._monotonic()
        new_burst = self._last is None or now - self._last >= self.quiet_s
        self._last = now
        if not new_burst:
            self._count += count
            return False
        self._previous_count, self._count = self._count, count
        info = f"failed login: {source}"
        if self._previous_count:
            info += f" (previous burst: {self._previous_count} failures)"
        self._report(info)
        return True

