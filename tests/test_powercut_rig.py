"""The power-cut file system loses exactly what was not synced (tests/powercut/fs.py).

Each test writes through the mount, cuts the power, mounts a fresh file system on what survived
(a reboot) and reads back. Where FUSE cannot be mounted the tests skip and say why.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from station.storage.durable import durable_write, fsync_directory
from tests.powercut.rig import PowerCutMount, require_fuse

OLD, NEW = b"old contents " * 100, b"new contents " * 700  # the new one spans pages


@pytest.fixture
def mount(tmp_path: Path) -> Iterator[PowerCutMount]:
    require_fuse()
    with PowerCutMount(tmp_path) as mount:
        yield mount


def power_cut(mount: PowerCutMount) -> Path:
    mount.cut()
    mount.restart()
    return mount.root


def fsynced(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def test_reads_see_unsynced_writes_while_the_power_is_on(mount: PowerCutMount) -> None:
    (mount.root / "f").write_bytes(NEW)
    assert (mount.root / "f").read_bytes() == NEW
    assert not (mount.backing / "f").exists()


def test_written_but_unsynced_data_is_lost_after_a_cut(mount: PowerCutMount) -> None:
    fsynced(mount.root / "f", OLD)
    with (mount.root / "f").open("r+b") as f:
        f.write(NEW)
    root = power_cut(mount)
    assert (root / "f").read_bytes() == OLD


def test_fsynced_data_survives_a_cut(mount: PowerCutMount) -> None:
    fsynced(mount.root / "f", NEW)
    root = power_cut(mount)
    assert (root / "f").read_bytes() == NEW


def test_fdatasync_makes_data_survive_a_cut(mount: PowerCutMount) -> None:
    fsynced(mount.root / "f", OLD)
    fd = os.open(mount.root / "f", os.O_WRONLY)
    os.write(fd, NEW)
    os.fdatasync(fd)
    os.close(fd)
    root = power_cut(mount)
    assert (root / "f").read_bytes() == NEW


def test_a_created_file_is_lost_without_a_sync(mount: PowerCutMount) -> None:
    (mount.root / "f").write_bytes(NEW)
    root = power_cut(mount)
    assert not (root / "f").exists()


def test_a_rename_without_directory_fsync_is_lost(mount: PowerCutMount) -> None:
    fsynced(mount.root / "a", NEW)
    os.rename(mount.root / "a", mount.root / "b")
    root = power_cut(mount)
    assert sorted(os.listdir(root)) == ["a"]


def test_a_rename_with_directory_fsync_survives(mount: PowerCutMount) -> None:
    fsynced(mount.root / "a", NEW)
    os.rename(mount.root / "a", mount.root / "b")
    fsync_directory(mount.root)
    root = power_cut(mount)
    assert sorted(os.listdir(root)) == ["b"]
    assert (root / "b").read_bytes() == NEW


def test_an_unlink_without_directory_fsync_is_lost(mount: PowerCutMount) -> None:
    fsynced(mount.root / "a", NEW)
    (mount.root / "a").unlink()
    root = power_cut(mount)
    assert (root / "a").read_bytes() == NEW


def test_a_renamed_temp_file_whose_data_was_never_synced_is_empty_after_a_cut(mount: PowerCutMount) -> None:
    """The 0-byte file of issue 23: rename committed by a later directory fsync, data never synced."""
    fsynced(mount.root / "job.json", OLD)
    (mount.root / "job.json.tmp").write_bytes(NEW)
    os.replace(mount.root / "job.json.tmp", mount.root / "job.json")
    fsync_directory(mount.root)
    root = power_cut(mount)
    assert (root / "job.json").read_bytes() == b""


def test_a_directory_created_and_synced_keeps_its_synced_files(mount: PowerCutMount) -> None:
    (mount.root / "sub").mkdir()
    fsynced(mount.root / "sub" / "f", NEW)
    root = power_cut(mount)
    assert (root / "sub" / "f").read_bytes() == NEW


def writes_at_every_cut_point(mount: PowerCutMount, write: Callable[[Path], None]) -> Iterator[bytes | None]:
    """Run `write` once per possible cut point (the power goes after its 1st, 2nd, ... changing
    operation) and then once uncut; yields what `f` holds after each reboot (None: missing)."""
    for operations in range(1, 100):
        fsynced(mount.root / "f", OLD)
        mount.arm(operations)
        with contextlib.suppress(OSError):  # EIO once the power is off
            write(mount.root / "f")
        finished = mount.powered
        root = power_cut(mount)
        yield (root / "f").read_bytes() if (root / "f").exists() else None
        for leftover in root.iterdir():
            leftover.unlink()
        fsync_directory(root)
        if finished:
            return
    raise AssertionError("the write never finished")


def test_durable_write_leaves_the_old_or_the_new_file_at_every_cut_point(mount: PowerCutMount) -> None:
    after = list(writes_at_every_cut_point(mount, lambda path: durable_write(path, NEW)))
    assert len(after) > 5  # create, write, fsync, rename, fsync dir, ...
    assert set(after) <= {OLD, NEW}
    assert after[-1] == NEW


def test_durable_write_survives_a_cut_right_after_it_returns(mount: PowerCutMount) -> None:
    fsynced(mount.root / "f", OLD)
    durable_write(mount.root / "f", NEW)
    root = power_cut(mount)
    assert (root / "f").read_bytes() == NEW


def test_a_plain_write_text_does_not_survive_a_cut_right_after_it_returns(mount: PowerCutMount) -> None:
    fsynced(mount.root / "f", OLD)
    (mount.root / "f").write_text(NEW.decode())
    root = power_cut(mount)
    assert (root / "f").read_bytes() != NEW


def test_a_plain_temp_and_rename_can_leave_neither_old_nor_new(mount: PowerCutMount) -> None:
    def unsynced_replace(path: Path) -> None:
        path.with_suffix(".tmp").write_bytes(NEW)
        os.replace(path.with_suffix(".tmp"), path)
        fsync_directory(path.parent)  # e.g. another writer's durable save in the same directory

    after = list(writes_at_every_cut_point(mount, unsynced_replace))
    assert b"" in after


def sqlite_rows_after_cut(mount: PowerCutMount, synchronous: str, rows: int = 50) -> int:
    con = sqlite3.connect(mount.root / "station.db", isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")
    con.execute("CREATE TABLE events (n INTEGER)")
    con.execute(f"PRAGMA synchronous={synchronous}")
    for n in range(rows):
        con.execute("BEGIN")
        con.execute("INSERT INTO events VALUES (?)", (n,))
        con.execute("COMMIT")
    mount.cut()
    con.close()
    mount.restart()
    with contextlib.closing(sqlite3.connect(mount.root / "station.db")) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return int(con.execute("SELECT COUNT(*) FROM events").fetchone()[0])


def test_sqlite_wal_with_synchronous_full_keeps_every_committed_row(mount: PowerCutMount) -> None:
    assert sqlite_rows_after_cut(mount, "FULL", rows=50) == 50


def test_sqlite_wal_with_synchronous_off_loses_committed_rows(mount: PowerCutMount) -> None:
    assert sqlite_rows_after_cut(mount, "OFF", rows=50) < 50


def rollback_journal_rows_after_cut(mount: PowerCutMount, synchronous: str) -> int:
    con = sqlite3.connect(mount.root / "j.db", isolation_level=None)
    con.execute("PRAGMA journal_mode=DELETE")
    con.execute(f"PRAGMA synchronous={synchronous}")
    con.execute("CREATE TABLE t (n INTEGER)")
    for n in range(20):
        con.execute("INSERT INTO t VALUES (?)", (n,))
    mount.cut()
    con.close()
    mount.restart()
    with contextlib.closing(sqlite3.connect(mount.root / "j.db")) as con:
        return int(con.execute("SELECT COUNT(*) FROM t").fetchone()[0])


def test_sqlite_rollback_journal_with_synchronous_extra_keeps_every_committed_row(mount: PowerCutMount) -> None:
    assert rollback_journal_rows_after_cut(mount, "EXTRA") == 20


def test_sqlite_rollback_journal_with_synchronous_full_can_lose_the_last_commit(mount: PowerCutMount) -> None:
    """As SQLite documents: in DELETE mode only EXTRA syncs the directory after the journal's unlink
    (the commit point), so with FULL the journal comes back after a cut and rolls the last commit back."""
    assert rollback_journal_rows_after_cut(mount, "FULL") == 19
