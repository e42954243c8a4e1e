"""station.storage.durable: the one durable-write helper."""
import os
from pathlib import Path

import pytest

from station.storage.durable import durable_append, durable_write, durable_write_text


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
