"""The store's commits: durable (fsync) for transactions and the outbox; the auth cache may skip the fsync."""

from __future__ import annotations

from pathlib import Path

import pytest

from station.core.store import Store

FULL = 2


def synchronous(store: Store) -> int:
    return int(store._db.execute("PRAGMA synchronous").fetchone()[0])  # noqa: SLF001


def test_the_store_commits_with_fsync_by_default(tmp_path: Path) -> None:
    store = Store(tmp_path / "station.db")
    assert synchronous(store) == FULL
    store.close()


def test_an_auth_cache_write_leaves_the_connection_committing_durably(tmp_path: Path) -> None:
    store = Store(tmp_path / "station.db")
    store.cache_put("TAG-0001", "Accepted", None)
    store.cache_used("TAG-0001")
    assert synchronous(store) == FULL
    assert store.cache_lookup("TAG-0001") == ("Accepted", None)
    store.close()


def test_a_failed_non_durable_commit_restores_durable_commits(tmp_path: Path) -> None:
    store = Store(tmp_path / "station.db")
    with pytest.raises(RuntimeError), store.transaction("test", durable=False):
        raise RuntimeError("boom")
    assert synchronous(store) == FULL
    store.close()


def test_a_non_durable_write_survives_a_reopen_after_a_durable_one(tmp_path: Path) -> None:
    store = Store(tmp_path / "station.db")
    store.cache_put("TAG-0002", "Blocked", None)
    store.put("after", 1)  # a durable commit: the WAL up to here is on disk
    store.close()
    reopened = Store(tmp_path / "station.db")
    assert reopened.cache_lookup("TAG-0002") == ("Blocked", None)
    reopened.close()
