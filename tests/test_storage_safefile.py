"""station.storage.safefile: what root may do in a directory another user controls.

Each test plays the other user (`nobody`, standing in for `station`): it owns the directory and
plants a link, a FIFO or a hard link where root is about to read or write; root must neither
follow it nor block on it, and a file root hands over gets its owner through the descriptor.
"""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

import pytest

from station.storage import safefile

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="plays root against another user: needs root")
NOBODY = pwd.getpwnam("nobody")


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A root-only file outside the other user's directory."""
    path = tmp_path / "victim"
    path.write_text("root's secret\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def station_dir(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    path.mkdir()
    os.chown(path, NOBODY.pw_uid, NOBODY.pw_gid)
    return path


def untouched(victim: Path) -> bool:
    info = victim.stat()
    return (victim.read_text() == "root's secret\n" and info.st_uid == 0 and stat.S_IMODE(info.st_mode) == 0o600)


def test_replace_swaps_a_planted_link_for_a_file_and_never_writes_through_it(station_dir: Path, victim: Path) -> None:
    (station_dir / "data.json").symlink_to(victim)
    with safefile.open_dir(station_dir) as directory:
        directory.replace("data.json", "{}", mode=0o600, owner=directory.owner())
    assert untouched(victim)
    info = (station_dir / "data.json").lstat()
    assert stat.S_ISREG(info.st_mode) and (info.st_uid, info.st_gid) == (NOBODY.pw_uid, NOBODY.pw_gid)
    assert stat.S_IMODE(info.st_mode) == 0o600


def test_replace_leaves_no_temp_file_behind(station_dir: Path) -> None:
    with safefile.open_dir(station_dir) as directory:
        directory.replace("a", b"1")
    assert sorted(os.listdir(station_dir)) == ["a"]


def test_append_refuses_a_planted_link(station_dir: Path, victim: Path) -> None:
    (station_dir / "history.jsonl").symlink_to(victim)
    with safefile.open_dir(station_dir) as directory, pytest.raises(safefile.UnsafeFile):
        directory.append("history.jsonl", "line\n")
    assert untouched(victim)


def test_append_refuses_a_hard_link(station_dir: Path, tmp_path: Path) -> None:
    other = station_dir / "other"
    other.write_text("x\n")
    os.link(other, station_dir / "history.jsonl")
    with safefile.open_dir(station_dir) as directory, pytest.raises(safefile.UnsafeFile, match="hard links"):
        directory.append("history.jsonl", "line\n")
    assert other.read_text() == "x\n"


def test_append_creates_the_file_with_mode_and_owner(station_dir: Path) -> None:
    with safefile.open_dir(station_dir) as directory:
        directory.append("h", "one\n", mode=0o640, owner=directory.owner())
        directory.append("h", "two\n")
    info = (station_dir / "h").stat()
    assert (station_dir / "h").read_text() == "one\ntwo\n"
    assert info.st_uid == NOBODY.pw_uid and stat.S_IMODE(info.st_mode) == 0o640


def test_read_refuses_a_link_to_a_root_only_file(station_dir: Path, victim: Path) -> None:
    (station_dir / "log").symlink_to(victim)
    with safefile.open_dir(station_dir) as directory, pytest.raises(safefile.UnsafeFile):
        directory.read_bytes("log")


def test_read_refuses_a_fifo_without_blocking(station_dir: Path) -> None:
    os.mkfifo(station_dir / "log")
    with safefile.open_dir(station_dir) as directory, pytest.raises(safefile.UnsafeFile, match="not a regular file"):
        directory.read_bytes("log")


def test_read_refuses_a_file_above_the_limit(station_dir: Path) -> None:
    (station_dir / "big").write_bytes(b"x" * 100)
    with safefile.open_dir(station_dir) as directory, pytest.raises(safefile.UnsafeFile, match="larger than 10"):
        directory.read_bytes("big", limit=10)


def test_a_linked_directory_inside_the_other_users_directory_is_refused(station_dir: Path, tmp_path: Path) -> None:
    secret_dir = tmp_path / "rootonly"
    secret_dir.mkdir(mode=0o700)
    (station_dir / "recorder").symlink_to(secret_dir)
    with pytest.raises(safefile.UnsafeFile, match="symlink"):
        safefile.open_dir(station_dir / "recorder")
    with safefile.open_dir(station_dir) as directory, pytest.raises(safefile.UnsafeFile):
        directory.subdir("recorder")


def test_a_link_in_a_directory_only_root_can_write_is_followed(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "alias").symlink_to(real)
    tmp_path.chmod(0o755)
    with safefile.open_dir(tmp_path / "alias") as directory:
        directory.replace("f", b"ok")
    assert (real / "f").read_bytes() == b"ok"


def test_mkdir_refuses_a_planted_link_and_sets_owner_on_a_new_directory(station_dir: Path, tmp_path: Path) -> None:
    (station_dir / "sub").symlink_to(tmp_path)
    with safefile.open_dir(station_dir) as directory:
        with pytest.raises(safefile.UnsafeFile):
            directory.mkdir("sub")
        with directory.mkdir("new", mode=0o750, owner=directory.owner()) as child:
            child.replace("x", b"1")
    info = (station_dir / "new").stat()
    assert info.st_uid == NOBODY.pw_uid and stat.S_IMODE(info.st_mode) == 0o750


def test_unlink_removes_the_link_not_its_target(station_dir: Path, victim: Path) -> None:
    (station_dir / "x").symlink_to(victim)
    with safefile.open_dir(station_dir) as directory:
        directory.unlink("x")
    assert not (station_dir / "x").is_symlink() and untouched(victim)


def test_names_with_a_slash_are_refused(station_dir: Path) -> None:
    with safefile.open_dir(station_dir) as directory, pytest.raises(safefile.UnsafeFile):
        directory.replace("../escape", b"x")


def test_a_trusted_relative_link_with_dotdot_is_followed(tmp_path: Path) -> None:
    """Like Debian's `/var/run -> /run` written relatively (`../run`): root's own link, root's own directory."""
    (tmp_path / "run").mkdir()
    (tmp_path / "var").mkdir(mode=0o755)
    (tmp_path / "var/run").symlink_to("../run")
    tmp_path.chmod(0o755)
    with safefile.open_dir(tmp_path / "var/run") as directory:
        directory.replace("f", b"ok")
    assert (tmp_path / "run/f").read_bytes() == b"ok"


def test_replace_symlink_swaps_whatever_is_there_for_the_new_link(station_dir: Path, victim: Path) -> None:
    """station-update's `current` / `previous` switch: a rename over the old entry, never a write through it."""
    (station_dir / "current").symlink_to(victim)
    with safefile.open_dir(station_dir) as directory:
        directory.replace_symlink("current", "releases/1.1.0")
    assert os.readlink(station_dir / "current") == "releases/1.1.0"
    assert sorted(os.listdir(station_dir)) == ["current"] and untouched(victim)


def test_rmtree_removes_links_inside_the_tree_never_their_targets(station_dir: Path, victim: Path) -> None:
    tree = station_dir / "release"
    (tree / "venv/bin").mkdir(parents=True)
    (tree / "venv/bin/escape").symlink_to(victim.parent)
    (tree / "venv/bin/file").symlink_to(victim)
    with safefile.open_dir(station_dir) as directory:
        directory.rmtree("release")
        directory.rmtree("missing")
    assert not tree.exists() and untouched(victim)


def test_rmtree_refuses_a_link_at_the_name(station_dir: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "keep").mkdir(parents=True)
    (station_dir / "release").symlink_to(elsewhere)
    with safefile.open_dir(station_dir) as directory, pytest.raises(OSError):
        directory.rmtree("release")
    assert (elsewhere / "keep").is_dir()
