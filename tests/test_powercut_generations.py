"""Certificate generations on the power-cut file system: a cut after any single file-system operation
of a renewal leaves the station the old complete pair or the new complete pair, never a mix
(issue 23; station/trust/generations.py). Skips, saying why, where FUSE cannot be mounted."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from station.trust import generations
from tests.powercut.rig import PowerCutMount, require_fuse

OLD = (b"-----certificate one-----\n", b"-----key one-----\n")
NEW = (b"-----certificate two-----\n", b"-----key two-----\n")


@pytest.fixture
def mount(tmp_path: Path) -> Iterator[PowerCutMount]:
    require_fuse()
    with PowerCutMount(tmp_path) as mount:
        yield mount


def station_dir(mount: PowerCutMount) -> Path:
    return mount.root / "state" / "pki" / "station"


def pair(cert_key: tuple[Path, Path] | None) -> tuple[bytes, bytes] | None:
    return None if cert_key is None else (cert_key[0].read_bytes(), cert_key[1].read_bytes())


def provisioned(mount: PowerCutMount) -> None:
    """A fresh backing directory holding generation OLD in force, all of it on disk."""
    mount.stop()
    shutil.rmtree(mount.backing, ignore_errors=True)
    mount.start()
    directory = station_dir(mount)
    directory.mkdir(parents=True)
    generations.switch(directory, generations.add_candidate(directory, OLD[0], OLD[1]))
    mount.sync()


def after_every_cut_point(mount: PowerCutMount, renew: Callable[[Path], None]) -> Iterator[tuple[bool, Path]]:
    """Run `renew` from the provisioned state once per cut point (the power goes after its 1st, 2nd,
    ... changing operation), then once uncut; yields (it finished, the station directory after the reboot)."""
    for operations in range(1, 200):
        provisioned(mount)
        mount.arm(operations)
        with contextlib.suppress(OSError):  # EIO once the power is off
            renew(station_dir(mount))
        finished = mount.powered
        mount.cut()
        mount.restart()
        yield finished, station_dir(mount)
        if finished:
            return
    raise AssertionError("the renewal never finished")


def renewal(directory: Path) -> None:
    """CertificateSigned stores the candidate; a connection with it works; it is switched into force."""
    generations.switch(directory, generations.add_candidate(directory, NEW[0], NEW[1]))


def renewal_and_prune(directory: Path) -> None:
    renewal(directory)
    generations.prune(directory)


def test_a_cut_at_any_point_of_a_renewal_leaves_the_old_or_the_new_pair(mount: PowerCutMount) -> None:
    """And once the switch returned, the new pair is in force after a cut (prune not needed for it)."""
    seen = []
    for finished, directory in after_every_cut_point(mount, renewal):
        in_force = pair(generations.current_pair(directory))
        assert in_force in (OLD, NEW), f"a cut left {in_force!r} in force"
        seen.append(in_force)
        if finished:
            assert in_force == NEW
    assert OLD in seen and NEW in seen and len(seen) > 4


def test_a_cut_while_the_old_generation_is_pruned_leaves_the_new_pair_in_force(mount: PowerCutMount) -> None:
    for _finished, directory in after_every_cut_point(mount, renewal_and_prune):
        assert pair(generations.current_pair(directory)) in (OLD, NEW)


def test_a_stored_candidate_survives_a_cut_right_after_it_is_stored(mount: PowerCutMount) -> None:
    """The station answered CertificateSigned Accepted once the candidate was stored: it must be there after a cut."""
    provisioned(mount)
    generations.add_candidate(station_dir(mount), NEW[0], NEW[1])
    mount.cut()
    mount.restart()
    assert pair(generations.candidate(station_dir(mount))) == NEW
    assert pair(generations.current_pair(station_dir(mount))) == OLD


def test_a_cut_while_a_candidate_is_stored_leaves_either_no_candidate_or_the_whole_one(mount: PowerCutMount) -> None:
    for _finished, directory in after_every_cut_point(
            mount, lambda d: generations.add_candidate(d, NEW[0], NEW[1])):
        assert pair(generations.candidate(directory)) in (None, NEW)
        assert pair(generations.current_pair(directory)) == OLD


def test_a_switch_by_a_plain_rename_is_caught(mount: PowerCutMount, monkeypatch: pytest.MonkeyPatch) -> None:
    """The deliberately broken variant: `current` swapped without fsync of the directory; the switch
    returned, yet after a cut the old pair is in force (the check above would fail)."""
    def plain_symlink(link: Path, target: str) -> None:
        temp = link.with_name(link.name + ".tmp")
        os.symlink(target, temp)
        os.replace(temp, link)

    monkeypatch.setattr(generations, "durable_symlink", plain_symlink)
    *_, (finished, directory) = after_every_cut_point(mount, renewal)
    assert finished
    assert pair(generations.current_pair(directory)) == OLD
