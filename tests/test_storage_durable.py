"""station.storage.durable: the one durable-write helper."""
import os
from pathlib import Path

import pytest

from station.storage.durable import (
    durable_append,
    durable_directory,
    durable_remove_directory,
    durable_symlink,
    durable_unlink,
    durable_write,
    durable_write_text,
    durable_writer,
)


def test_durable_write_replaces_the_file_whole(tmp_path: Path) -> None:
    target = tmp_path / "job.json"
    target.write_text("old")
    durable_write_text(target, '{"new": true}')
    assert target.read_text() == '{"new": true}'


def test_durable_write_leaves_no_temp_file(tmp_path: Path) -> None:
    durable_write(tmp_path / "a", b"x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]


def test_durable_write_sets_the_mode_despite_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        durable_write(tmp_path / "pub", b"x", mode=0o644)
    finally:
        os.umask(old)
    assert (tmp_path / "pub").stat().st_mode & 0o777 == 0o644


def test_durable_write_replaces_a_planted_link_without_writing_through_it(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (tmp_path / "state.json").symlink_to(victim)
    durable_write(tmp_path / "state.json", b"new")
    assert victim.read_text() == "keep"
    assert not (tmp_path / "state.json").is_symlink()


def test_durable_write_failure_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "job.json"
    target.write_text("old")
    with pytest.raises(TypeError):
        durable_write(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.json"]


def test_durable_append_adds_lines_in_order(tmp_path: Path) -> None:
    history = tmp_path / "history.jsonl"
    durable_append(history, b"1\n")
    durable_append(history, b"2\n")
    assert history.read_text() == "1\n2\n"


def test_durable_append_refuses_a_planted_link(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (tmp_path / "history.jsonl").symlink_to(victim)
    with pytest.raises(OSError):
        durable_append(tmp_path / "history.jsonl", b"x\n")
    assert victim.read_text() == "keep"


def test_durable_writer_replaces_the_file_when_the_block_ends(tmp_path: Path) -> None:
    target = tmp_path / "firmware.whl"
    target.write_bytes(b"old")
    with durable_writer(target, mode=0o600) as handle:
        handle.write(b"new ")
        handle.write(b"artefact")
    assert target.read_bytes() == b"new artefact"
    assert target.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["firmware.whl"]


def test_durable_writer_keeps_the_old_file_when_the_block_fails(tmp_path: Path) -> None:
    target = tmp_path / "firmware.whl"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), durable_writer(target) as handle:
        handle.write(b"half")
        raise RuntimeError("download broke")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["firmware.whl"]


def test_durable_directory_appears_complete_with_its_modes(tmp_path: Path) -> None:
    durable_directory(tmp_path / "gen-1", {"key.pem": (b"k", 0o600), "cert.pem": (b"c", 0o644)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gen-1"]
    assert (tmp_path / "gen-1" / "key.pem").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "gen-1" / "cert.pem").read_bytes() == b"c"


def test_durable_directory_never_overwrites_an_existing_one(tmp_path: Path) -> None:
    durable_directory(tmp_path / "gen-1", {"key.pem": (b"old", 0o600)})
    with pytest.raises(OSError):
        durable_directory(tmp_path / "gen-1", {"key.pem": (b"new", 0o600)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gen-1"]
    assert (tmp_path / "gen-1" / "key.pem").read_bytes() == b"old"


def test_durable_symlink_repoints_a_link_in_one_step(tmp_path: Path) -> None:
    durable_symlink(tmp_path / "current", "gen-0")
    durable_symlink(tmp_path / "current", "gen-1")
    assert os.readlink(tmp_path / "current") == "gen-1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["current"]


def test_durable_remove_directory_removes_it_and_its_files(tmp_path: Path) -> None:
    durable_directory(tmp_path / "gen-0", {"key.pem": (b"k", 0o600)})
    durable_remove_directory(tmp_path / "gen-0")
    durable_remove_directory(tmp_path / "gen-0")  # already gone: nothing to do
    assert list(tmp_path.iterdir()) == []


def test_durable_unlink_removes_the_file_and_tolerates_its_absence(tmp_path: Path) -> None:
    durable_write(tmp_path / "job.json", b"{}")
    durable_unlink(tmp_path / "job.json")
    durable_unlink(tmp_path / "job.json")
    assert list(tmp_path.iterdir()) == []
