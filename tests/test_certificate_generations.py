"""The client key and certificate switch as a pair: a cut at any step leaves the old or the new pair, whole.

Each test runs one operation (store a signed certificate, promote it, migrate the flat layout of
earlier releases) again and again, cutting it before its 1st, 2nd, 3rd ... file system call until
it runs through; after every cut the station restarts on the surviving files and must present a
key and certificate that belong together (what TLS loads; `ssl` refuses a mismatched pair) and
that are either the old or the new pair. The cut is a crash at a system call (nothing after it
happens); losing data that was written but not fsynced is the FUSE power-cut rig's subject.
"""

from __future__ import annotations

import os
import shutil
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography import x509

from station.ocpp.connection import Attempt, LinkParams
from station.trust import generations, pki
from station.trust.credentials import Credentials
from tests.pki_helpers import TestPki, key_pem, make_leaf, make_pki, pem

MUTATING = ("open", "write", "fsync", "replace", "rename", "symlink", "unlink", "rmdir", "mkdir", "chmod", "fchmod")


class Cut(BaseException):
    """The power went: nothing after this system call happens."""


@contextmanager
def cut_before_call(n: int) -> Iterator[list[int]]:
    """Let `n` file system calls through, then cut at the next one; yields [calls made] for the caller."""
    made = [0]
    originals = {name: getattr(os, name) for name in MUTATING}

    def counting(name: str) -> Callable[..., object]:
        original = originals[name]

        def call(*args: object, **kwargs: object) -> object:
            if made[0] >= n:
                raise Cut(f"cut before os.{name} (call {n + 1})")
            made[0] += 1
            return original(*args, **kwargs)
        return call

    for name in MUTATING:
        setattr(os, name, counting(name))
    try:
        yield made
    finally:
        for name, original in originals.items():
            setattr(os, name, original)


def every_cut(operation: Callable[[], None], reset: Callable[[], None], check: Callable[[int], None]) -> int:
    """Run `operation` cut before each of its file system calls in turn (from a fresh `reset` state
    each time), then `check(n)` the survivors; finally once without a cut. Returns the cuts made."""
    n = 0
    while True:
        reset()
        try:
            with cut_before_call(n):
                operation()
        except Cut:
            check(n)
            n += 1
            continue
        check(n)
        return n


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture
def test_pki(tmp_path: Path) -> TestPki:
    return make_pki(tmp_path / "pki")


class Pair:
    def __init__(self, test_pki: TestPki, label: str) -> None:
        key, cert = make_leaf((test_pki.ca_key, test_pki.ca_cert), "CP", organization=label)
        self.key, self.cert, self.serial = key_pem(key), (pem(cert) + test_pki.ca_pem).encode(), cert.serial_number


def serial_in_force(cert: Path, key: Path) -> int:
    """The serial of the pair TLS would present; fails when key and certificate do not belong together."""
    leaf = pki.load_chain(cert.read_bytes())[0]
    assert pki.key_matches(leaf, key.read_bytes()), f"key {key} does not match certificate {cert}"
    ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(cert, key)  # what the connection does
    return leaf.serial_number


def params(test_pki: TestPki) -> LinkParams:
    return LinkParams(station_id="CP", url_201="wss://127.0.0.1:9/", security_profile=3, ca_bundle=test_pki.ca,
                      client_cert=test_pki.client_cert, client_key=test_pki.client_key)


def restarted(state: Path, test_pki: TestPki) -> Credentials:
    """The daemon's credential source as built at a start on the surviving files (migration included)."""
    return Credentials(state, params(test_pki))


def in_force(credentials: Credentials) -> int:
    """The established pair (what a refused new certificate falls back to)."""
    cert, key = credentials._certificate()  # noqa: SLF001
    assert cert is not None and key is not None
    return serial_in_force(Path(cert), Path(key))


def presented(credentials: Credentials) -> int:
    """What the next connection presents: the candidate when there is one, else the established pair."""
    attempt = credentials.attempt()
    assert attempt.client_cert is not None and attempt.client_key is not None
    return serial_in_force(Path(attempt.client_cert), Path(attempt.client_key))


def earlier_release_in_force(station: Path, test_pki: TestPki) -> int:
    """What a release from before generations (rolled back to by station-update) presents: its
    `_certificate` takes pki/station/cert.pem and key.pem when both exist, else the provisioned pair."""
    if (station / "cert.pem").exists() and (station / "key.pem").exists():
        return serial_in_force(station / "cert.pem", station / "key.pem")
    return serial_in_force(test_pki.client_cert, test_pki.client_key)


def earlier_release_promotes(station: Path, cert: bytes, key: bytes) -> None:
    """An earlier release stores a signed certificate (new.pem/new.key) and promotes it as it did:
    cert.pem/key.pem renamed to previous.*, new.* renamed to cert.pem/key.pem."""
    (station / "new.pem").write_bytes(cert)
    (station / "new.key").write_bytes(key)
    (station / "cert.pem").replace(station / "previous.pem")
    (station / "key.pem").replace(station / "previous.key")
    (station / "new.key").replace(station / "key.pem")
    (station / "new.pem").replace(station / "cert.pem")


def provisioned_serial(test_pki: TestPki) -> int:
    return x509.load_pem_x509_certificate(test_pki.client_cert.read_bytes()).serial_number


# ---------------------------------------------------------------------------------------- tests
def test_a_cut_while_storing_a_signed_certificate_keeps_the_current_pair_in_force(tmp_path: Path, test_pki: TestPki) -> None:
    state, old, new = tmp_path / "state", Pair(test_pki, "old"), Pair(test_pki, "new")
    station = state / "pki" / "station"

    def reset() -> None:
        shutil.rmtree(state, ignore_errors=True)
        generations.switch(station, generations.add_candidate(station, old.cert, old.key))

    def check(_: int) -> None:
        after = restarted(state, test_pki)
        assert in_force(after) == old.serial
        assert presented(after) in (old.serial, new.serial)
        candidate = generations.candidate(station)
        assert candidate is None or serial_in_force(*candidate) == new.serial

    cuts = every_cut(lambda: generations.add_candidate(station, new.cert, new.key), reset, check)
    assert cuts > 10  # every write, fsync and rename of the key, the chain and their directory


def test_a_cut_while_promoting_a_proven_certificate_leaves_the_old_or_the_new_pair(tmp_path: Path, test_pki: TestPki) -> None:
    state, old, new = tmp_path / "state", Pair(test_pki, "old"), Pair(test_pki, "new")
    station = state / "pki" / "station"
    seen: set[int] = set()

    def reset() -> None:
        shutil.rmtree(state, ignore_errors=True)
        generations.switch(station, generations.add_candidate(station, old.cert, old.key))
        generations.add_candidate(station, new.cert, new.key)

    credentials: list[Credentials] = []

    def promote() -> None:
        attempt = credentials[-1].attempt()
        assert "certificate" in attempt.trying
        credentials[-1].connected(attempt)  # the CSMS accepted the new certificate

    def reset_and_start() -> None:
        reset()
        credentials.append(restarted(state, test_pki))

    def check(_: int) -> None:
        assert earlier_release_in_force(station, test_pki) in (old.serial, new.serial)  # after a rollback
        after = restarted(state, test_pki)
        assert presented(after) in (old.serial, new.serial)  # the candidate again if the switch was lost
        assert in_force(after) in (old.serial, new.serial)
        seen.add(in_force(after))

    cuts = every_cut(promote, reset_and_start, check)
    assert cuts > 2 and seen == {old.serial, new.serial}
    final = restarted(state, test_pki)
    assert in_force(final) == new.serial
    assert list(generations.generations(station)) == [1]  # the old generation is pruned once the new one worked


def test_a_certificate_switched_without_proof_keeps_the_previous_pair_until_a_connection_worked(
        tmp_path: Path, test_pki: TestPki) -> None:
    state, old, new = tmp_path / "state", Pair(test_pki, "old"), Pair(test_pki, "new")
    station = state / "pki" / "station"
    generations.switch(station, generations.add_candidate(station, old.cert, old.key))
    generations.add_candidate(station, new.cert, new.key)
    credentials = restarted(state, test_pki)
    credentials._promote_certificate(generations.candidate(station)[0], proven=False)  # type: ignore[index]  # noqa: SLF001
    assert in_force(credentials) == new.serial
    assert sorted(generations.generations(station)) == [0, 1]
    credentials.connected(credentials.attempt())
    assert sorted(generations.generations(station)) == [1]


def test_a_refused_candidate_is_dropped_and_the_pair_in_force_kept(tmp_path: Path, test_pki: TestPki) -> None:
    from station.ocpp.connection import FailureKind

    state, old, new = tmp_path / "state", Pair(test_pki, "old"), Pair(test_pki, "new")
    station = state / "pki" / "station"
    generations.switch(station, generations.add_candidate(station, old.cert, old.key))
    generations.add_candidate(station, new.cert, new.key)
    credentials = restarted(state, test_pki)
    for _ in range(3):
        attempt = credentials.attempt()
        assert "certificate" in attempt.trying
        credentials.failed(attempt, FailureKind.AUTH_FAILED)
    assert generations.candidate(station) is None
    assert in_force(credentials) == old.serial


def test_a_cut_while_migrating_the_flat_layout_keeps_the_pair_in_force(tmp_path: Path, test_pki: TestPki) -> None:
    state, previous, old, new = tmp_path / "state", Pair(test_pki, "previous"), Pair(test_pki, "old"), Pair(test_pki, "new")
    station = state / "pki" / "station"

    def reset() -> None:
        shutil.rmtree(state, ignore_errors=True)
        station.mkdir(parents=True)
        for name, data in (("previous.pem", previous.cert), ("previous.key", previous.key), ("cert.pem", old.cert),
                           ("key.pem", old.key), ("new.pem", new.cert), ("new.key", new.key)):
            (station / name).write_bytes(data)

    def check(_: int) -> None:
        pair = generations.current_pair(station)  # what a reader finds right after the cut, before any start
        assert pair is not None and serial_in_force(*pair) == old.serial
        assert earlier_release_in_force(station, test_pki) == old.serial  # a rollback right after the cut
        assert in_force(restarted(state, test_pki)) == old.serial  # and after a start, which migrates again
        assert serial_in_force(*generations.candidate(station)) == new.serial  # type: ignore[misc]

    cuts = every_cut(lambda: generations.migrate(station), reset, check)
    assert cuts > 10
    assert sorted(p.name for p in station.iterdir()) == ["cert.pem", "current", "gen-0", "gen-1", "gen-2", "key.pem"]


def test_without_an_installed_certificate_the_provisioned_pair_is_presented(tmp_path: Path, test_pki: TestPki) -> None:
    assert in_force(restarted(tmp_path / "state", test_pki)) == provisioned_serial(test_pki)


def test_new_certificate_attempt_names_files_of_one_generation(tmp_path: Path, test_pki: TestPki) -> None:
    state, old, new = tmp_path / "state", Pair(test_pki, "old"), Pair(test_pki, "new")
    station = state / "pki" / "station"
    generations.switch(station, generations.add_candidate(station, old.cert, old.key))
    generations.add_candidate(station, new.cert, new.key)
    attempt: Attempt = restarted(state, test_pki).attempt()
    assert attempt.client_cert and attempt.client_key
    assert Path(attempt.client_cert).parent == Path(attempt.client_key).parent == station / "gen-1"


def test_a_second_signed_certificate_replaces_the_waiting_one(tmp_path: Path, test_pki: TestPki) -> None:
    station = tmp_path / "state" / "pki" / "station"
    first, second = Pair(test_pki, "first"), Pair(test_pki, "second")
    generations.add_candidate(station, first.cert, first.key)
    generations.add_candidate(station, second.cert, second.key)
    assert sorted(generations.generations(station)) == [1]
    assert serial_in_force(*generations.candidate(station)) == second.serial  # type: ignore[misc]


def test_an_earlier_release_presents_the_pair_in_force_through_the_flat_names(tmp_path: Path, test_pki: TestPki) -> None:
    state, old, new = tmp_path / "state", Pair(test_pki, "old"), Pair(test_pki, "new")
    station = state / "pki" / "station"
    generations.switch(station, generations.add_candidate(station, old.cert, old.key))
    assert earlier_release_in_force(station, test_pki) == old.serial
    generations.switch(station, generations.add_candidate(station, new.cert, new.key))
    assert earlier_release_in_force(station, test_pki) == new.serial
    assert os.readlink(station / "cert.pem") == "current/cert.pem" and os.readlink(station / "key.pem") == "current/key.pem"


def test_a_certificate_an_earlier_release_promoted_after_a_rollback_is_in_force_after_the_next_update(
        tmp_path: Path, test_pki: TestPki) -> None:
    state, old, rolled_back = tmp_path / "state", Pair(test_pki, "old"), Pair(test_pki, "rolled back")
    station = state / "pki" / "station"
    generations.switch(station, generations.add_candidate(station, old.cert, old.key))
    earlier_release_promotes(station, rolled_back.cert, rolled_back.key)
    assert in_force(Credentials(state, params(test_pki), read_only=True)) == rolled_back.serial  # before any start
    after = restarted(state, test_pki)
    assert in_force(after) == rolled_back.serial
    assert generations.candidate(station) is None
    assert earlier_release_in_force(station, test_pki) == rolled_back.serial  # and a second rollback too


def test_a_cut_while_migrating_an_earlier_releases_promotion_leaves_its_pair_in_force(tmp_path: Path, test_pki: TestPki) -> None:
    state, old, rolled_back, waiting = (tmp_path / "state", Pair(test_pki, "old"), Pair(test_pki, "rolled back"),
                                        Pair(test_pki, "waiting"))
    station = state / "pki" / "station"

    def reset() -> None:
        shutil.rmtree(state, ignore_errors=True)
        generations.switch(station, generations.add_candidate(station, old.cert, old.key))
        earlier_release_promotes(station, rolled_back.cert, rolled_back.key)
        (station / "new.pem").write_bytes(waiting.cert)  # and then stored one more, not yet used
        (station / "new.key").write_bytes(waiting.key)

    def check(_: int) -> None:
        assert earlier_release_in_force(station, test_pki) == rolled_back.serial
        after = restarted(state, test_pki)
        assert in_force(after) == rolled_back.serial
        assert serial_in_force(*generations.candidate(station)) == waiting.serial  # type: ignore[misc]
        assert earlier_release_in_force(station, test_pki) == rolled_back.serial

    assert every_cut(lambda: generations.migrate(station), reset, check) > 10


def test_certificates_an_earlier_release_discarded_on_re_provisioning_stay_discarded(tmp_path: Path, test_pki: TestPki) -> None:
    state, old = tmp_path / "state", Pair(test_pki, "old")
    station = state / "pki" / "station"
    generations.switch(station, generations.add_candidate(station, old.cert, old.key))
    for name in ("cert.pem", "key.pem", "new.pem", "new.key", "pending.key", "previous.pem", "previous.key"):
        (station / name).unlink(missing_ok=True)  # what the earlier release did when the provisioned values changed
    assert in_force(restarted(state, test_pki)) == provisioned_serial(test_pki)
    assert not generations.generations(station)


def test_a_torn_pair_an_earlier_release_left_is_not_carried_over(tmp_path: Path, test_pki: TestPki) -> None:
    state, old, new = tmp_path / "state", Pair(test_pki, "old"), Pair(test_pki, "new")
    station = state / "pki" / "station"
    generations.switch(station, generations.add_candidate(station, old.cert, old.key))
    (station / "key.pem").unlink()
    (station / "key.pem").write_bytes(new.key)  # its promotion's renames, half of them lost in a cut
    assert in_force(restarted(state, test_pki)) == provisioned_serial(test_pki)
    assert earlier_release_in_force(station, test_pki) == provisioned_serial(test_pki)
