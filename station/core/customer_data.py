"""What the station holds about one customer, reported and cleared on the CSMS's request.

OCPP 2.0.1 N09 (Get Customer Information) and N10 (Clear Customer Information): privacy law lets
a driver ask what an operator stores about them and have it erased, and the operator's CSMS
passes the request on to its stations. A station keeps a driver's token in:

- the authorization cache (status, expiry, group, when last written): reported, cleared;
- the local authorization list: reported, never cleared here (N10.FR.03: only the CSMS changes
  it, with SendLocalList, or the list versions would disagree);
- reservations: reported, cleared (the reservation is cancelled: it cannot be honoured for a
  customer the station no longer knows);
- stored transactions: reported; an ended one loses its token (its energy and times stay for
  billing), a running one keeps it until it ends (the same token stops it);
- queued messages for the CSMS: counted, kept until the CSMS confirms them (they carry the token
  to the CSMS, which asked).

Protocol-neutral: lines of plain text, paged by the adapter into its message size. The token is
never logged; a clear is logged with what was removed, counted.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import structlog

from station.core.store import StoreError

if TYPE_CHECKING:
    from station.core.reservations import Reservation
    from station.core.station import StationCore

log = structlog.get_logger(__name__)

NOTHING_STORED = "No data stored about this customer."


class CustomerDataError(Exception):
    """The state database refused the read or the erase: the request cannot be carried out now."""


def _when(unix: float | None) -> str:
    return datetime.fromtimestamp(unix, UTC).isoformat(timespec="seconds") if unix else "-"


class CustomerData:
    """Report and clear a customer's data; `token` is the idToken's text (matched case-insensitively)."""

    def __init__(self, core: StationCore) -> None:
        self.core = core

    def report(self, token: str) -> list[str]:
        """One line per item the station holds about the token; NOTHING_STORED alone when none."""
        try:
            records = self.core.store.customer_records(token)
        except (StoreError, OSError, ValueError) as exc:
            raise CustomerDataError(str(exc)) from None
        except Exception as exc:  # noqa: BLE001 — sqlite3 errors: the request is refused, the daemon stays
            raise CustomerDataError(exc.__class__.__name__) from None
        lines: list[str] = []
        cache = records["cache"]
        if cache is not None:
            lines.append(f"Authorization cache: status {cache.status}, expires {cache.expires_at or '-'}, "
                         f"group {'yes' if cache.group_id else 'none'}, written {_when(cache.updated)}.")
        listed = records["local_list"]
        if listed is not None:
            lines.append(f"Local authorization list: status {listed.status}, expires {listed.expires_at or '-'}, "
                         f"group {'yes' if listed.group_id else 'none'}.")
        for r in self._reservations(token):
            lines.append(f"Reservation {r.id}: connector {r.connector_id or 'any'}, expires {r.expires_at}.")
        for tx in records["transactions"]:
            energy = f"{tx.energy_wh:.0f} Wh" if tx.energy_wh is not None else "energy unknown"
            if tx.ended_at is None:
                lines.append(f"Transaction {tx.id}: connector {tx.connector_id}, started {tx.started_at}, in progress.")
            else:
                lines.append(f"Transaction {tx.id}: connector {tx.connector_id}, started {tx.started_at}, "
                             f"ended {tx.ended_at}, {energy}.")
        if records["queued"]:
            lines.append(f"Messages queued for the CSMS naming this customer: {records['queued']}.")
        return lines or [NOTHING_STORED]

    def clear(self, token: str) -> list[str]:
        """Erase what may be erased (see the module's docstring), durably; one line per kind of item."""
        reservations = self._reservations(token)
        try:
            counts = self.core.store.clear_customer(token)
        except StoreError as exc:
            raise CustomerDataError(str(exc)) from None
        cancelled = [r.id for r in reservations if self.core.reservations.cancel(r.id)]
        try:
            records = self.core.store.customer_records(token)
        except Exception:  # noqa: BLE001 — the erase is done; what stays is only reported
            records = {"local_list": None, "transactions": [], "queued": 0}
        kept_tx = sum(1 for tx in records["transactions"] if tx.ended_at is None)
        log.warning("customer data cleared on the CSMS's request", cache_entries=counts["cache"],
                    transactions=counts["transactions"], reservations=len(cancelled),
                    kept_local_list=records["local_list"] is not None, kept_running_transactions=kept_tx,
                    kept_queued_messages=records["queued"])
        lines: list[str] = []
        if counts["cache"]:
            lines.append("Cleared: authorization cache entry.")
        for rid in cancelled:
            lines.append(f"Cleared: reservation {rid} (cancelled).")
        if counts["transactions"]:
            lines.append(f"Cleared: the customer's token from {counts['transactions']} ended transaction(s).")
        if records["local_list"] is not None:
            lines.append("Kept: local authorization list entry (changed by the CSMS only).")
        if kept_tx:
            lines.append(f"Kept until it ends: {kept_tx} transaction in progress.")
        if records["queued"]:
            lines.append(f"Kept until the CSMS confirms them: {records['queued']} queued message(s).")
        return lines or [NOTHING_STORED]

    def _reservations(self, token: str) -> list[Reservation]:
        wanted = token.casefold()
        return [r for r in self.core.reservations.by_id.values() if r.id_token.casefold() == wanted]


def pages(lines: list[str], limit: int) -> list[str]:
    """The lines joined by newlines into chunks of at most `limit` characters (a longer line is cut
    into pieces): one chunk per message, in order."""
    chunks: list[str] = []
    current = ""
    for line in lines:
        while len(line) > limit:
            if current:
                chunks.append(current)
                current = ""
            chunks.append(line[:limit])
            line = line[limit:]
        candidate = f"{current}\n{line}" if current else line
        if len(candidate) > limit:
            chunks.append(current)
            current = line
        else:
            current = candidate
    if current or not chunks:
        chunks.append(current)
    return chunks
