"""Where a backlog replay's writes go: the daemon's store calls of a replay, one kind at a time.

    python -m tests.bench.backlog_writes [--events 10000]

A real state database with `--events` queued transaction events (tests/bench/workload.py: started,
2 × updated, ended per transaction) is replayed with the calls the daemon makes for them, in its
order: per transaction, `pin_version` before the Started goes out (a durable commit) and
`cache_put` from the Started answer's idTokenInfo (a commit without fsync); the acknowledged
entries deleted `--batch` at a time (`ack_outbox_many`). Each line measures this process's
dirtied page-cache bytes (`written_bytes`, as the write budget does for the daemon) for all of
them, each kind alone, and variants (SQLite's checkpoint interval, page size of a new database).
docs/reliability.md ("Why a backlog costs about one page per event") quotes a run.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
from pathlib import Path

from station.core.authorization import CACHE_MAX_ENTRIES
from station.core.clock import Clock
from station.core.store import Store
from tests.bench.workload import queue_transaction_events
from tests.bench.writes import written_bytes

KINDS = ("pin", "cache", "ack")


def replay(directory: Path, events: int, *, kinds: tuple[str, ...] = KINDS, batch: int = 100,
           pragmas: tuple[str, ...] = (), page_size: int | None = None) -> int:
    """Bytes dirtied replaying `events` queued events with the store calls of `kinds`."""
    path = directory / "station.db"
    if page_size is not None:  # a new database's page size is set before its first table
        db = sqlite3.connect(path)
        db.execute(f"PRAGMA page_size={int(page_size)}")
        db.execute("VACUUM")
        db.close()
    store = Store(path)
    queue_transaction_events(store, Clock(trusted=True), events)
    store.close()  # checkpointed: the replay starts from an empty WAL, as a daemon's start does
    store = Store(path)
    try:
        for pragma in pragmas:
            store._db.execute(pragma)  # noqa: SLF001
        rows = store._db.execute("SELECT id, transaction_id, kind FROM outbox ORDER BY id").fetchall()  # noqa: SLF001
        before = written_bytes(os.getpid())
        confirmed: list[int] = []
        for entry_id, transaction_id, kind in rows:
            if kind == "started":
                if "pin" in kinds:
                    store.pin_version(transaction_id, "2.0.1")
                if "cache" in kinds:
                    store.cache_put("BENCHTAG", "Accepted", None, max_entries=CACHE_MAX_ENTRIES)
            confirmed.append(entry_id)
            if len(confirmed) >= batch:
                if "ack" in kinds:
                    store.ack_outbox_many(confirmed)
                confirmed = []
        if confirmed and "ack" in kinds:
            store.ack_outbox_many(confirmed)
    finally:
        store.close()
    return written_bytes(os.getpid()) - before


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.backlog_writes", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=100, help="acknowledged entries deleted per commit")
    args = parser.parse_args()
    runs: list[tuple[str, dict[str, object]]] = [
        ("all (pin + cache + ack)", {}),
        ("pin_version alone", {"kinds": ("pin",)}),
        ("cache_put alone", {"kinds": ("cache",)}),
        ("ack_outbox_many alone", {"kinds": ("ack",)}),
        ("all, wal_autocheckpoint=10000", {"pragmas": ("PRAGMA wal_autocheckpoint=10000",)}),
        ("all, new database with page_size=1024", {"page_size": 1024}),
    ]
    print(f"{args.events} events, {args.events // 4} transactions, acknowledgements deleted {args.batch} at a time")
    for label, options in runs:
        with tempfile.TemporaryDirectory(prefix="station-backlog-writes-", dir=Path.cwd()) as tmp:
            written = replay(Path(tmp), args.events, batch=args.batch, **options)  # type: ignore[arg-type]
        print(f"  {label:40} {written / args.events:7.0f} B/event  {written / 4096 / args.events:5.2f} pages/event",
              flush=True)


if __name__ == "__main__":
    main()
