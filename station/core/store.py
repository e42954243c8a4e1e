"""Durable station state in SQLite (WAL): transactions, the transaction outbox, settings, auth data.

Every transaction message is written here, in the same SQLite transaction as
the state change that caused it, before anything is sent. It leaves the outbox
only when the CSMS confirms it. `synchronous=FULL` so a power cut after a
commit loses nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from station.core.clock import Stamp

log = structlog.get_logger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS transactions (
    id TEXT PRIMARY KEY,
    connector_id INTEGER NOT NULL,
    id_token TEXT,
    token_type TEXT,
    remote_start_id INTEGER,
    started_at TEXT NOT NULL,
    ended_at TEXT,
    meter_start_wh REAL,
    meter_stop_wh REAL,
    stop_reason TEXT,
    seq_next INTEGER NOT NULL DEFAULT 0,
    csms_id TEXT,
    charging_state TEXT NOT NULL DEFAULT 'EVConnected',
    ocpp_version TEXT,
    authorized INTEGER NOT NULL DEFAULT 1,
    last_energy_wh REAL
);
CREATE INDEX IF NOT EXISTS transactions_open ON transactions(ended_at);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    transaction_id TEXT NOT NULL,
    connector_id INTEGER NOT NULL,
    kind TEXT NOT NULL,
    seq_no INTEGER NOT NULL,
    trigger TEXT NOT NULL,
    wall TEXT NOT NULL,
    mono REAL NOT NULL,
    boot_id TEXT NOT NULL,
    trusted INTEGER NOT NULL,
    offline INTEGER NOT NULL,
    data TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL DEFAULT 0,
    parked INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE TABLE IF NOT EXISTS tx_samples (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    transaction_id TEXT NOT NULL,
    series TEXT NOT NULL,
    context TEXT NOT NULL,
    wall TEXT NOT NULL,
    meter TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS tx_samples_tx ON tx_samples(transaction_id, series);
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS auth_cache (
    id_token TEXT PRIMARY KEY, status TEXT NOT NULL, expires_at TEXT, updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS local_list (id_token TEXT PRIMARY KEY, status TEXT NOT NULL, expires_at TEXT);
CREATE TABLE IF NOT EXISTS reservations (
    id INTEGER PRIMARY KEY, connector_id INTEGER, id_token TEXT NOT NULL, token_type TEXT NOT NULL,
    group_id TEXT, expires_at TEXT NOT NULL, connector_type TEXT
);
CREATE TABLE IF NOT EXISTS security_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    wall TEXT NOT NULL,
    mono REAL NOT NULL,
    boot_id TEXT NOT NULL,
    trusted INTEGER NOT NULL,
    type TEXT NOT NULL,
    tech_info TEXT,
    critical INTEGER NOT NULL
);
"""

SECURITY_LOG_ROWS = 10_000
"""The security log keeps this many newest events (a few MB at most; GetLog SecurityLog exports it)."""


DB_MODE = 0o600
"""Drivers' tokens and the transaction history are personal data: the daemon's user alone reads
the database. SQLite creates -wal and -shm with the database file's mode."""


def _owner_only(path: Path) -> None:
    """Create the database file 0600 (whatever the umask), and tighten an older one and its -wal/-shm."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, DB_MODE))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(FileNotFoundError, PermissionError):
            if file.stat().st_mode & 0o077:
                os.chmod(file, DB_MODE)


class StoreError(Exception):
    """The state database cannot be written (disk full, read-only, corrupt)."""


class LocalListTooLong(Exception):
    """A SendLocalList would make the local list longer than LocalAuthListMaxLength (answered Failed)."""


@dataclass(slots=True)
class TransactionRecord:
    id: str
    connector_id: int
    id_token: str | None
    token_type: str | None
    remote_start_id: int | None
    started_at: str
    ended_at: str | None = None
    meter_start_wh: float | None = None
    meter_stop_wh: float | None = None
    stop_reason: str | None = None
    seq_next: int = 0
    csms_id: str | None = None
    charging_state: str = "EVConnected"
    ocpp_version: str | None = None
    """The OCPP version its first message went out in ("201" | "16"): all its messages go in it."""
    authorized: bool = True
    last_energy_wh: float | None = None
    """The energy register at the transaction's latest recorded event: its meterStop when it ends
    before the meter answered again (a restart, a meter outage)."""
    """False while a transaction started at EVConnected waits for a token, or after a stop request
    that only deauthorized it (TxStopPoint without Authorized): the relay stays open."""

    @property
    def energy_wh(self) -> float | None:
        if self.meter_start_wh is None or self.meter_stop_wh is None:
            return None
        return self.meter_stop_wh - self.meter_start_wh

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "connector_id": self.connector_id, "id_token": self.id_token,
            "token_type": self.token_type, "started_at": self.started_at, "ended_at": self.ended_at,
            "meter_start_wh": self.meter_start_wh, "meter_stop_wh": self.meter_stop_wh,
            "energy_wh": self.energy_wh, "stop_reason": self.stop_reason,
            "charging_state": self.charging_state, "csms_id": self.csms_id,
            "ocpp_version": self.ocpp_version,
        }


@dataclass(slots=True)
class OutboxEntry:
    """A message waiting for the CSMS's confirmation, in protocol-neutral form.

    Mostly transaction messages (kind started | updated | ended). Other durable station→CSMS
    messages (security events, NotifyEvent) share the queue with an empty `transaction_id`, so
    they get the same guarantees (written before sent, replayed in order after an outage or a
    kill -9, deleted only when confirmed): see `Store.append_message`.
    """

    id: int
    transaction_id: str
    connector_id: int
    kind: str  # started | updated | ended, or a non-transaction kind (append_message)
    seq_no: int
    trigger: str
    stamp: Stamp
    offline: bool
    data: dict[str, Any] = field(default_factory=dict)
    attempts: int = 0
    parked: bool = False
    last_error: str | None = None
    next_attempt: float = 0.0
    """Unix time before which a refused entry is not sent again."""

    def summary(self) -> dict[str, Any]:
        """What an operator needs to judge a parked entry; no token (the data stays in the store)."""
        return {
            "id": self.id, "transaction_id": self.transaction_id, "connector_id": self.connector_id,
            "kind": self.kind, "seq_no": self.seq_no, "trigger": self.trigger, "recorded_at": self.stamp.wall.isoformat(),
            "attempts": self.attempts, "parked": self.parked, "last_error": self.last_error,
        }

    @property
    def is_transaction(self) -> bool:
        return bool(self.transaction_id)


_TX_COLUMNS = [f for f in TransactionRecord.__dataclass_fields__]
_SET_SEPARATELY = ("csms_id", "ocpp_version")
"""Columns only their own setters write: the core's copy of a transaction may not know them yet."""
_ADDED_COLUMNS = {
    "transactions": {"ocpp_version": "TEXT", "authorized": "INTEGER NOT NULL DEFAULT 1", "last_energy_wh": "REAL"},
    "auth_cache": {"group_id": "TEXT", "last_used": "REAL NOT NULL DEFAULT 0", "uses": "INTEGER NOT NULL DEFAULT 0"},
    "local_list": {"group_id": "TEXT"},
}
"""Columns added after the first release: added to an older database when it is opened."""


_LANES = {None: "", "transaction": " AND o.transaction_id<>''", "message": " AND o.transaction_id=''"}
"""The outbox's two lanes: transaction messages (strict order) and the other queued messages."""


class Store:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":  # SQLite's in-memory database (station --once): no file to create
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _owner_only(self.path)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        with self._guard("open"):
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            # 1 MiB page cache instead of SQLite's 2 MiB: replaying a full outbox filled the
            # default one and held it (+2.3 MB resident); reads are sequential by id.
            self._db.execute("PRAGMA cache_size=-1024")
            self._db.execute("PRAGMA busy_timeout=2000")
            self._db.executescript(SCHEMA)
            self._add_columns()
            # Samples of transactions that ended (their end message holds them) or vanished.
            self._db.execute("DELETE FROM tx_samples WHERE transaction_id NOT IN"
                             " (SELECT id FROM transactions WHERE ended_at IS NULL)")
        self.healthy = True
        self.last_error: str | None = None

    def close(self) -> None:
        self._db.close()

    def _add_columns(self) -> None:
        for table, columns in _ADDED_COLUMNS.items():
            present = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            for name, kind in columns.items():
                if name not in present:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")

    @contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            self.healthy = False
            self.last_error = f"{what}: {exc}"
            log.error("store write failed", what=what, error=str(exc), db=str(self.path))
            raise StoreError(f"state database {self.path}: {what} failed: {exc}") from exc

    @contextmanager
    def transaction(self, what: str, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """All writes inside commit together or not at all.

        `durable=False` is for data a power cut may cost without harm (the authorization cache):
        the commit skips its fsync (WAL, `synchronous=NORMAL` for this one commit) and becomes
        durable with the next durable commit, since the WAL is written in order. Transactions and
        the outbox always commit durably.
        """
        with self._guard(what):
            if not durable:
                self._db.execute("PRAGMA synchronous=NORMAL")
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                    self._db.execute("COMMIT")
                except BaseException:
                    # SQLite may already have rolled back (SQLITE_FULL does): a second ROLLBACK would
                    # raise and hide the real error; a failed COMMIT must not leave the transaction open.
                    if self._db.in_transaction:
                        with contextlib.suppress(sqlite3.Error):
                            self._db.execute("ROLLBACK")
                    raise
            finally:
                if not durable:
                    self._db.execute("PRAGMA synchronous=FULL")
        self.healthy = True

    # --- transactions ---------------------------------------------------------
    def save_transaction(self, db: sqlite3.Connection, tx: TransactionRecord) -> None:
        """Upsert; the CSMS's transaction id and the OCPP version are only set by their own setters."""
        columns = [c for c in _TX_COLUMNS if c not in _SET_SEPARATELY]
        updates = ",".join(f"{c}=excluded.{c}" for c in columns if c != "id")
        db.execute(
            f"INSERT INTO transactions ({','.join(columns)}) VALUES ({','.join('?' for _ in columns)})"
            f" ON CONFLICT(id) DO UPDATE SET {updates}",
            [getattr(tx, c) for c in columns],
        )

    def open_transactions(self) -> list[TransactionRecord]:
        rows = self._db.execute("SELECT * FROM transactions WHERE ended_at IS NULL ORDER BY started_at").fetchall()
        return [TransactionRecord(**dict(r)) for r in rows]

    def get_transaction(self, tx_id: str) -> TransactionRecord | None:
        row = self._db.execute("SELECT * FROM transactions WHERE id=?", (tx_id,)).fetchone()
        return TransactionRecord(**dict(row)) if row else None

    def recent_transactions(self, limit: int = 20, offset: int = 0) -> list[TransactionRecord]:
        rows = self._db.execute(
            "SELECT * FROM transactions ORDER BY started_at DESC, rowid DESC LIMIT ? OFFSET ?", (limit, offset)
        ).fetchall()
        return [TransactionRecord(**dict(r)) for r in rows]

    def count_transactions(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM transactions").fetchone()[0])

    def set_csms_transaction_id(self, tx_id: str, csms_id: str) -> None:
        with self.transaction("set csms transaction id") as db:
            db.execute("UPDATE transactions SET csms_id=? WHERE id=?", (csms_id, tx_id))

    def pin_version(self, tx_id: str, version: str) -> None:
        """Bind a transaction to the OCPP version its first message is sent in (kept if already bound)."""
        with self.transaction("pin transaction version") as db:
            db.execute("UPDATE transactions SET ocpp_version=? WHERE id=? AND ocpp_version IS NULL", (version, tx_id))

    def versions_needed(self) -> dict[str, int]:
        """Per OCPP version: open transactions bound to it plus queued messages of transactions bound to it."""
        rows = self._db.execute(
            "SELECT ocpp_version, COUNT(*) FROM ("
            " SELECT t.ocpp_version FROM outbox o JOIN transactions t ON t.id = o.transaction_id"
            "  WHERE o.parked=0 AND t.ocpp_version IS NOT NULL"
            " UNION ALL SELECT ocpp_version FROM transactions WHERE ended_at IS NULL AND ocpp_version IS NOT NULL"
            ") GROUP BY ocpp_version").fetchall()
        return {str(r[0]): int(r[1]) for r in rows}

    def held_outbox(self, version: str) -> int:
        """Queued messages bound to an OCPP version other than `version` (they wait for theirs)."""
        return int(self._db.execute(
            "SELECT COUNT(*) FROM outbox o JOIN transactions t ON t.id = o.transaction_id"
            " WHERE o.parked=0 AND t.ocpp_version IS NOT NULL AND t.ocpp_version<>?", (version,)).fetchone()[0])

    # --- meter samples kept for a transaction's end message ---------------------
    def add_tx_sample(self, tx_id: str, series: str, context: str, wall: str, meter: dict[str, Any], *,
                      keep: int) -> None:
        """Keep one reading for the transaction's end message (station/core/tx_ended.py).

        A series holding more than `keep` samples is thinned (`thin`: every second one goes, the
        first and the newest stay). Not fsynced: a kill -9 keeps it (WAL), a power cut may cost
        the newest samples; the transaction and its messages are committed durably elsewhere.
        """
        with self.transaction("keep a meter sample for the transaction's end", durable=False) as db:
            db.execute("INSERT INTO tx_samples (transaction_id, series, context, wall, meter) VALUES (?,?,?,?,?)",
                       (tx_id, series, context, wall, json.dumps(meter)))
            count = int(db.execute("SELECT COUNT(*) FROM tx_samples WHERE transaction_id=? AND series=?",
                                   (tx_id, series)).fetchone()[0])
            if count > keep:
                ids = [int(r[0]) for r in db.execute(
                    "SELECT id FROM tx_samples WHERE transaction_id=? AND series=? ORDER BY id", (tx_id, series))]
                kept = set(thin(ids))
                db.executemany("DELETE FROM tx_samples WHERE id=?", [(i,) for i in ids if i not in kept])

    def tx_samples(self, tx_id: str) -> list[dict[str, Any]]:
        """The readings kept for a transaction's end message, oldest first: {timestamp, context, meter}."""
        rows = self._db.execute("SELECT context, wall, meter FROM tx_samples WHERE transaction_id=? ORDER BY wall, id",
                                (tx_id,)).fetchall()
        return [{"timestamp": r[1], "context": r[0], "meter": json.loads(r[2])} for r in rows]

    @staticmethod
    def drop_tx_samples(db: sqlite3.Connection, tx_id: str) -> None:
        """Forget a transaction's kept readings, inside the commit that stores its end message."""
        db.execute("DELETE FROM tx_samples WHERE transaction_id=?", (tx_id,))

    # --- outbox ---------------------------------------------------------------
    def append_outbox(self, db: sqlite3.Connection, entry: OutboxEntry) -> int:
        s = entry.stamp
        cur = db.execute(
            "INSERT INTO outbox (transaction_id, connector_id, kind, seq_no, trigger, wall, mono, boot_id, trusted,"
            " offline, data) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (entry.transaction_id, entry.connector_id, entry.kind, entry.seq_no, entry.trigger,
             s.wall.isoformat(), s.mono, s.boot_id, int(s.trusted), int(entry.offline), json.dumps(entry.data)),
        )
        entry.id = int(cur.lastrowid or 0)
        return entry.id

    def append_message(self, db: sqlite3.Connection, kind: str, stamp: Stamp, data: dict[str, Any], *,
                       offline: bool = False) -> int:
        """Queue a station→CSMS message that belongs to no transaction, inside the caller's SQLite transaction.

        The generic durable path for messages other than transaction events (SecurityEventNotification,
        NotifyEvent, ...): same outbox, same order, same retry/park rules. `kind` names the message
        protocol-neutrally; the OCPP side turns it into a CALL with a builder registered in
        `station.ocpp.outbox_kinds`. `data` must be JSON-ready and must not hold secrets.
        """
        if kind in ("started", "updated", "ended"):
            raise ValueError(f"{kind} is a transaction message kind")
        return self.append_outbox(db, OutboxEntry(id=0, transaction_id="", connector_id=0, kind=kind, seq_no=0,
                                                  trigger="", stamp=stamp, offline=offline, data=data))

    def pending_outbox(self, limit: int = 100, *, due_only: bool = False, version: str | None = None,
                       lane: str | None = None) -> list[OutboxEntry]:
        """Queued entries in order; with `version`, only those that may go out in it (not bound to another);
        with `lane` ("transaction" | "message"), only transaction messages or only the others."""
        sql = "SELECT o.* FROM outbox o"
        args: list[Any] = []
        if version is not None:
            sql += " LEFT JOIN transactions t ON t.id = o.transaction_id WHERE o.parked=0" \
                   " AND (t.ocpp_version IS NULL OR t.ocpp_version=?)"
            args.append(version)
        else:
            sql += " WHERE o.parked=0"
        sql += _LANES[lane]
        if due_only:
            sql += " AND o.next_attempt<=?"
            args.append(time.time())
        rows = self._db.execute(sql + " ORDER BY o.id LIMIT ?", (*args, limit)).fetchall()
        return [self._entry(r) for r in rows]

    def next_outbox_attempt(self, lane: str | None = None) -> float | None:
        """The earliest Unix time a queued (not parked) entry of `lane` may be sent; None when none waits."""
        row = self._db.execute("SELECT MIN(o.next_attempt) FROM outbox o WHERE o.parked=0" + _LANES[lane]).fetchone()
        return None if row[0] is None else float(row[0])

    def parked_outbox(self) -> list[OutboxEntry]:
        return [self._entry(r) for r in self._db.execute("SELECT * FROM outbox WHERE parked=1 ORDER BY id")]

    def parked_count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM outbox WHERE parked=1").fetchone()[0])

    def release_parked(self, entry_ids: list[int] | None = None) -> list[int]:
        """Put parked entries (all, or these) back in the queue with fresh attempts; the ids released."""
        with self.transaction("release parked outbox entries") as db:
            if entry_ids is None:
                ids = [int(r[0]) for r in db.execute("SELECT id FROM outbox WHERE parked=1 ORDER BY id")]
            else:
                marks = ",".join("?" for _ in entry_ids)
                ids = [int(r[0]) for r in db.execute(
                    f"SELECT id FROM outbox WHERE parked=1 AND id IN ({marks}) ORDER BY id", entry_ids)]
            db.executemany("UPDATE outbox SET parked=0, attempts=0, next_attempt=0 WHERE id=?", [(i,) for i in ids])
        return ids

    def queued_for_transaction(self, tx_id: str | None = None) -> int:
        """Transaction messages not yet confirmed (parked ones too): of `tx_id`, or of any transaction."""
        if tx_id is None:
            return int(self._db.execute("SELECT COUNT(*) FROM outbox WHERE transaction_id<>''").fetchone()[0])
        return int(self._db.execute("SELECT COUNT(*) FROM outbox WHERE transaction_id=?", (tx_id,)).fetchone()[0])

    def outbox_depth(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM outbox WHERE parked=0").fetchone()[0])

    def outbox_kinds(self) -> dict[str, int]:
        """Queued (not parked) entries by kind: `--once` says what waits (security events are no transaction)."""
        return {str(k): int(n) for k, n in self._db.execute(
            "SELECT kind, COUNT(*) FROM outbox WHERE parked=0 GROUP BY kind")}

    def ack_outbox(self, entry_id: int) -> None:
        with self.transaction("ack outbox"):
            self._db.execute("DELETE FROM outbox WHERE id=?", (entry_id,))

    def ack_outbox_many(self, entry_ids: list[int]) -> None:
        """Delete confirmed entries in one commit: one fsync for a run of confirmations during replay."""
        if not entry_ids:
            return
        with self.transaction("ack outbox"):
            self._db.executemany("DELETE FROM outbox WHERE id=?", [(i,) for i in entry_ids])

    def retry_outbox(self, entry_id: int, error: str, delay_s: float, *, park: bool) -> None:
        """Count a failed attempt; park the entry (kept for inspection, not sent) when out of attempts."""
        with self.transaction("retry outbox"):
            self._db.execute(
                "UPDATE outbox SET attempts=attempts+1, last_error=?, next_attempt=?, parked=? WHERE id=?",
                (error, time.time() + delay_s, int(park), entry_id),
            )

    @staticmethod
    def _entry(r: sqlite3.Row) -> OutboxEntry:
        return OutboxEntry(
            id=r["id"], transaction_id=r["transaction_id"], connector_id=r["connector_id"], kind=r["kind"],
            seq_no=r["seq_no"], trigger=r["trigger"],
            stamp=Stamp(datetime.fromisoformat(r["wall"]), r["mono"], r["boot_id"], bool(r["trusted"])),
            offline=bool(r["offline"]), data=json.loads(r["data"]), attempts=r["attempts"],
            parked=bool(r["parked"]), last_error=r["last_error"], next_attempt=r["next_attempt"],
        )

    # --- security log -----------------------------------------------------------
    def append_security_log(self, db: sqlite3.Connection, stamp: Stamp, type_: str, tech_info: str | None,
                            critical: bool) -> int:
        """One security event into the bounded local security log (oldest rows beyond the bound go)."""
        cur = db.execute(
            "INSERT INTO security_log (wall, mono, boot_id, trusted, type, tech_info, critical) VALUES (?,?,?,?,?,?,?)",
            (stamp.wall.isoformat(), stamp.mono, stamp.boot_id, int(stamp.trusted), type_, tech_info, int(critical)),
        )
        row_id = int(cur.lastrowid or 0)
        if row_id > SECURITY_LOG_ROWS:
            db.execute("DELETE FROM security_log WHERE id<=?", (row_id - SECURITY_LOG_ROWS,))
        return row_id

    def security_log(self) -> list[sqlite3.Row]:
        """All rows of the security log, oldest first."""
        return self._db.execute("SELECT * FROM security_log ORDER BY id").fetchall()

    # --- settings -------------------------------------------------------------
    def get(self, key: str, default: Any = None) -> Any:
        row = self._db.execute("SELECT value FROM kv WHERE key=?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def delete(self, key: str) -> None:
        with self.transaction(f"delete {key}") as db:
            db.execute("DELETE FROM kv WHERE key=?", (key,))

    def put(self, key: str, value: Any) -> None:
        with self.transaction(f"set {key}") as db:
            db.execute("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", (key, json.dumps(value)))

    # --- authorization data ---------------------------------------------------
    def local_list_version(self) -> int:
        return int(self.get("local_list_version", 0))

    def local_list_update(self, version: int, entries: dict[str, tuple[str, str | None] | tuple[str, str | None, str | None] | None],
                          *, full: bool, max_entries: int | None = None) -> None:
        """entries: token → (status, expires_at[, group_id]), or None to remove the token (differential update).

        Raises LocalListTooLong (nothing changed) when the list would hold more than `max_entries` tokens.
        """
        with self.transaction("update local list") as db:
            if full:
                db.execute("DELETE FROM local_list")
            for token, value in entries.items():
                if value is None:
                    db.execute("DELETE FROM local_list WHERE id_token=?", (token,))
                else:
                    group = value[2] if len(value) > 2 else None  # type: ignore[misc]
                    db.execute("INSERT OR REPLACE INTO local_list (id_token, status, expires_at, group_id) VALUES (?,?,?,?)",
                               (token, value[0], value[1], group))
            if max_entries is not None and int(db.execute("SELECT COUNT(*) FROM local_list").fetchone()[0]) > max_entries:
                raise LocalListTooLong(f"the local list would hold more than {max_entries} tokens")
            db.execute("INSERT OR REPLACE INTO kv (key, value) VALUES ('local_list_version', ?)", (str(version),))

    def local_list_lookup(self, token: str) -> tuple[str, str | None] | None:
        row = self._db.execute("SELECT status, expires_at FROM local_list WHERE id_token=?", (token,)).fetchone()
        return (row[0], row[1]) if row else None

    def local_list_entry(self, token: str) -> AuthEntry | None:
        row = self._db.execute("SELECT status, expires_at, group_id FROM local_list WHERE id_token=?", (token,)).fetchone()
        return AuthEntry(row[0], row[1], row[2]) if row else None

    def local_list_size(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM local_list").fetchone()[0])

    def cache_put(self, token: str, status: str, expires_at: str | None, group_id: str | None = None,
                  *, max_entries: int | None = None, policy: str = "LRU") -> None:
        """Store (or refresh) a token's answer; over `max_entries` the policy's victims leave first."""
        now = time.time()
        with self.transaction("update auth cache", durable=False) as db:  # a cache: may be lost, never wrong
            db.execute(
                "INSERT INTO auth_cache (id_token, status, expires_at, updated, group_id, last_used, uses)"
                " VALUES (?,?,?,?,?,?,1) ON CONFLICT(id_token) DO UPDATE SET status=excluded.status,"
                " expires_at=excluded.expires_at, updated=excluded.updated, group_id=excluded.group_id,"
                " last_used=excluded.last_used, uses=uses+1",
                (token, status, expires_at, now, group_id, now))
            if max_entries is not None:
                order = {"LFU": "uses, last_used", "FIFO": "updated"}.get(policy.upper(), "last_used")
                db.execute(
                    f"DELETE FROM auth_cache WHERE id_token IN (SELECT id_token FROM auth_cache ORDER BY {order}"
                    " LIMIT max(0, (SELECT COUNT(*) FROM auth_cache) - ?))", (max_entries,))

    def cache_lookup(self, token: str) -> tuple[str, str | None] | None:
        row = self._db.execute("SELECT status, expires_at FROM auth_cache WHERE id_token=?", (token,)).fetchone()
        return (row[0], row[1]) if row else None

    def cache_entry(self, token: str) -> AuthEntry | None:
        row = self._db.execute("SELECT status, expires_at, group_id, updated FROM auth_cache WHERE id_token=?",
                               (token,)).fetchone()
        return AuthEntry(row[0], row[1], row[2], row[3]) if row else None

    def cache_used(self, token: str) -> None:
        """A cache hit: counts for the LRU and LFU policies."""
        with self.transaction("auth cache hit", durable=False) as db:
            db.execute("UPDATE auth_cache SET last_used=?, uses=uses+1 WHERE id_token=?", (time.time(), token))

    def cache_remove(self, token: str) -> None:
        with self.transaction("remove auth cache entry") as db:
            db.execute("DELETE FROM auth_cache WHERE id_token=?", (token,))

    def cache_size(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM auth_cache").fetchone()[0])

    def cache_clear(self) -> None:
        with self.transaction("clear auth cache") as db:
            db.execute("DELETE FROM auth_cache")

    # --- customer data (CustomerInformation, N09/N10) ----------------------------
    def customer_records(self, token: str) -> dict[str, Any]:
        """What the store holds about a token (matched case-insensitively, as OCPP's IdToken)."""
        one = "SELECT status, expires_at, group_id{} FROM {} WHERE id_token = ? COLLATE NOCASE"
        cache = self._db.execute(one.format(", updated", "auth_cache"), (token,)).fetchone()
        listed = self._db.execute(one.format("", "local_list"), (token,)).fetchone()
        transactions = [TransactionRecord(**dict(r)) for r in self._db.execute(
            "SELECT * FROM transactions WHERE id_token = ? COLLATE NOCASE ORDER BY started_at", (token,))]
        queued = sum(1 for (data,) in self._db.execute("SELECT data FROM outbox")
                     if token.casefold() in {str(json.loads(data).get(k, "")).casefold() for k in ("id_token", "stop_id_token")})
        return {"cache": AuthEntry(cache[0], cache[1], cache[2], cache[3]) if cache else None,
                "local_list": AuthEntry(listed[0], listed[1], listed[2]) if listed else None,
                "transactions": transactions, "queued": queued}

    def clear_customer(self, token: str) -> dict[str, int]:
        """Remove a token from the authorization cache and from ended transactions, in one durable
        commit; how many rows of each. The local list (the CSMS's) and running transactions stay."""
        with self.transaction("clear customer data") as db:
            cache = db.execute("DELETE FROM auth_cache WHERE id_token = ? COLLATE NOCASE", (token,)).rowcount
            ended = db.execute("UPDATE transactions SET id_token=NULL WHERE id_token = ? COLLATE NOCASE"
                               " AND ended_at IS NOT NULL", (token,)).rowcount
        return {"cache": cache, "transactions": ended}

    # --- reservations -----------------------------------------------------------
    def reservation_put(self, r: dict[str, Any]) -> None:
        """Insert or replace (same id) a reservation: keys as the `reservations` columns."""
        with self.transaction("store reservation") as db:
            db.execute("INSERT OR REPLACE INTO reservations (id, connector_id, id_token, token_type, group_id,"
                       " expires_at, connector_type) VALUES (:id,:connector_id,:id_token,:token_type,:group_id,"
                       ":expires_at,:connector_type)", r)

    def reservation_delete(self, reservation_id: int, message: tuple[str, Stamp, dict[str, Any]] | None = None) -> None:
        """Remove a reservation; `message` (kind, stamp, data) is queued in the outbox in the same commit."""
        with self.transaction("remove reservation") as db:
            db.execute("DELETE FROM reservations WHERE id=?", (reservation_id,))
            if message is not None:
                self.append_message(db, *message)

    def reservations(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self._db.execute("SELECT * FROM reservations ORDER BY id")]


def thin(items: list[Any]) -> list[Any]:
    """Every second item dropped, the first and the last kept: the series keeps covering the whole
    transaction at half the resolution (OCPP 2.0.1 lets a station drop intermediate values of the
    Ended message; the Transaction.Begin and newest readings stay)."""
    if len(items) <= 2:
        return list(items)
    kept = items[:-1:2]
    kept.append(items[-1])
    return kept


@dataclass(frozen=True, slots=True)
class AuthEntry:
    """A token's entry in the local list or the authorization cache."""

    status: str
    expires_at: str | None = None
    group_id: str | None = None
    updated: float | None = None
    """Unix time the cache entry was written (None for the local list)."""
