"""The station's client key and certificate as generations: switched as a pair, never half.

A key and its certificate must change together: a new key beside the old certificate (or the
reverse) is a station its CSMS refuses under security profile 3, after a power cut, for good. So
each pair lives in its own directory, written whole before it appears under its name
(`durable_directory`), and one symlink says which is in force:

    <state>/pki/station/gen-<n>/key.pem     0600
    <state>/pki/station/gen-<n>/cert.pem    the certificate and its chain (what TLS presents)
    <state>/pki/station/current -> gen-<n>  swapped by renaming a temp link over it, then fsync

A generation newer than the current one is a candidate (signed, not yet proven by a connection).
The previous generation stays until the current one has authenticated, then it is pruned. After
a cut at any instant the station finds the old complete pair or the new complete pair.

The flat layout of earlier releases (cert.pem, key.pem, previous.*, new.* side by side) is
migrated into generations at start; until then it is read as it was. Standard library only:
`station.trust.pki_worker` writes candidates from its child process.

Rollback: an earlier release (station-update's rollback) reads only the flat `cert.pem` and
`key.pem`, and falls back to the provisioned pair without them. So those two names stay, as
relative symlinks through `current` (`cert.pem -> current/cert.pem`): they follow the one swap of
`current`, so they too name the old pair or the new pair, never a mix. What an earlier release
writes there afterwards (a regular file, or its renames) is its newer state: the next start of
this release migrates it again (`from_earlier_release`), and a start finding `current` without
both links takes it that the earlier release discarded its certificates (re-provisioning).
"""

from __future__ import annotations

import os
import re
import ssl
from pathlib import Path

from station.storage.durable import (
    durable_directory,
    durable_remove_directory,
    durable_symlink,
    durable_unlink,
    fsync_directory,
)

CURRENT = "current"
KEY, CERT = "key.pem", "cert.pem"
LINKS = {CERT: f"{CURRENT}/{CERT}", KEY: f"{CURRENT}/{KEY}"}
"""The flat names an earlier release reads, kept as symlinks through `current`."""
_GEN = re.compile(r"^gen-(\d+)$")
FLAT = ("previous", "cert", "new")
"""Earlier releases' flat pairs, oldest first: previous.pem/.key, cert.pem/key.pem, new.pem/.key."""


def _flat_pair(directory: Path, which: str) -> tuple[Path, Path]:
    if which == "cert":
        return directory / "cert.pem", directory / "key.pem"
    return directory / f"{which}.pem", directory / f"{which}.key"


def _is_link(path: Path) -> bool:
    """`path` is this release's compatibility link (not a file an earlier release wrote there)."""
    try:
        return os.readlink(path) == LINKS.get(path.name)
    except OSError:
        return False


def from_earlier_release(directory: Path) -> bool:
    """The flat names hold what an earlier release wrote (never migrated, or run after a rollback):
    cert.pem or key.pem that is not this release's link, a whole new.pem/new.key pair, or `current`
    without both links (the earlier release removed them on re-provisioning). Then the flat names,
    not the generations, are in force. (A half new or previous pair is a cut's leftover: no release
    uses it.)"""
    if any(os.path.lexists(directory / name) and not _is_link(directory / name) for name in LINKS):
        return True
    if all(path.is_file() for path in _flat_pair(directory, "new")):
        return True
    return os.path.lexists(directory / CURRENT) and not all(os.path.lexists(directory / name) for name in LINKS)


def _belong_together(cert: Path, key: Path) -> bool:
    """The key is the certificate's (what TLS checks when it loads them); an earlier release's
    unsynced renames can leave a new key beside an old certificate."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(cert, key)
    except (ssl.SSLError, OSError, ValueError):
        return False
    return True


def link_flat_names(directory: Path) -> None:
    """Make the flat names an earlier release reads point through `current` (once; they then follow it).
    Before a first `current` they dangle, and an earlier release uses the provisioned pair, as it should."""
    for name, target in LINKS.items():
        if not _is_link(directory / name):
            durable_symlink(directory / name, target)


def complete(gen: Path) -> bool:
    return (gen / KEY).is_file() and (gen / CERT).is_file()


def generations(directory: Path) -> dict[int, Path]:
    """Complete generations by number (a partly removed one is not listed)."""
    found: dict[int, Path] = {}
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return found
    for entry in entries:
        match = _GEN.match(entry.name)
        if match and entry.is_dir(follow_symlinks=False) and complete(Path(entry.path)):
            found[int(match.group(1))] = Path(entry.path)
    return found


def current_number(directory: Path) -> int | None:
    """The generation in force, or None (none made yet, or the flat layout)."""
    try:
        target = os.readlink(directory / CURRENT)
    except OSError:
        return None
    match = _GEN.match(target)
    if match is None or not complete(directory / target):
        return None
    return int(match.group(1))


def current_pair(directory: Path) -> tuple[Path, Path] | None:
    """(cert, key) in force: the current generation's, else (not migrated yet) the flat files, else None.

    The paths name the generation's own directory, not the `current` link: a reader holding them
    keeps one matching pair even when a switch happens between its two reads."""
    number = current_number(directory)
    if number is not None and not from_earlier_release(directory):
        gen = directory / f"gen-{number}"
        return gen / CERT, gen / KEY
    cert, key = _flat_pair(directory, "cert")
    return (cert, key) if cert.is_file() and key.is_file() else None


def candidate(directory: Path) -> tuple[Path, Path] | None:
    """(cert, key) of the newest generation after the current one (signed, not yet in force), or None."""
    if from_earlier_release(directory):
        cert, key = _flat_pair(directory, "new")
        return (cert, key) if cert.is_file() and key.is_file() else None
    number = current_number(directory)
    newer = {n: p for n, p in generations(directory).items() if number is None or n > number}
    if newer:
        gen = newer[max(newer)]
        return gen / CERT, gen / KEY
    if number is None:
        cert, key = _flat_pair(directory, "new")
        if cert.is_file() and key.is_file():
            return cert, key
    return None


def add_candidate(directory: Path, cert_pem: bytes, key_pem: bytes) -> Path:
    """Store a signed certificate and its key as a new generation (whole or not at all); older
    candidates it supersedes are removed. The current generation is not touched."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    existing = generations(directory)
    number = max([*existing, *_numbers_in_use(directory), -1]) + 1
    gen = directory / f"gen-{number}"
    durable_directory(gen, {KEY: (key_pem, 0o600), CERT: (cert_pem, 0o644)})
    current = current_number(directory)
    for n, path in existing.items():
        if current is None or n > current:  # an older candidate, never a generation in force or before it
            durable_remove_directory(path)
    return gen


def _numbers_in_use(directory: Path) -> list[int]:
    """Every gen-<n> name, complete or not: a new generation never reuses a half-removed one's name."""
    try:
        return [int(m.group(1)) for name in os.listdir(directory) if (m := _GEN.match(name))]
    except FileNotFoundError:
        return []


def switch(directory: Path, gen: Path) -> None:
    """Make `gen` the generation in force: one atomic, durable symlink swap."""
    if gen.parent != directory or not _GEN.match(gen.name) or not complete(gen):
        raise ValueError(f"not a complete generation of {directory}: {gen.name}")
    link_flat_names(directory)  # before `current`: a start never finds `current` without them (see above)
    durable_symlink(directory / CURRENT, gen.name)


def drop(directory: Path, gen: Path) -> None:
    """Remove one generation (a candidate that never worked); never the current one."""
    match = _GEN.match(gen.name)
    if match and gen.parent == directory and current_number(directory) != int(match.group(1)):
        durable_remove_directory(gen)


def prune(directory: Path) -> None:
    """The current generation has authenticated: every older generation goes (newer candidates stay)."""
    number = current_number(directory)
    if number is None:
        return
    for n in _numbers_in_use(directory):
        if n < number:
            durable_remove_directory(directory / f"gen-{n}")


def migrate(directory: Path) -> None:
    """Turn the flat layout into generations (at start) and clear leftovers of cut operations.

    When the flat names hold an earlier release's state (`from_earlier_release`: first start after
    an update, or after a rollback and a new update), each flat pair (previous, current, new)
    becomes a new generation, numbered after every existing one, in that order; `current` points
    at the one that was cert.pem/key.pem (or is removed: the provisioned pair is in force); the
    generations from before go; last the flat names become links again. A cut midway leaves a flat
    file (read as before) and the next start does it again."""
    if not directory.is_dir():
        return
    for entry in os.scandir(directory):  # temp files and directories of a cut durable write
        if entry.name.startswith(".") and entry.name.endswith(".tmp"):
            if entry.is_dir(follow_symlinks=False):
                durable_remove_directory(entry.path)
            else:
                os.unlink(entry.path)
    if from_earlier_release(directory):
        flat = [(which, *_flat_pair(directory, which)) for which in FLAT]
        present = [(which, cert, key) for which, cert, key in flat if cert.is_file() and key.is_file()]
        if not any(which == "cert" for which, _, _ in present):  # the provisioned pair is in force: no previous
            present = [p for p in present if p[0] != "previous"]
        present = [p for p in present if _belong_together(p[1], p[2])]  # never carry a torn renewal over
        before = _numbers_in_use(directory)
        base = max(before, default=-1) + 1
        in_force: Path | None = None
        for number, (which, cert, key) in enumerate(present, start=base):
            gen = directory / f"gen-{number}"
            durable_directory(gen, {KEY: (key.read_bytes(), 0o600), CERT: (cert.read_bytes(), 0o644)})
            if which == "cert":
                in_force = gen
        if in_force is not None:
            durable_symlink(directory / CURRENT, in_force.name)
        for n in before:  # the state from before: the earlier release's is newer
            durable_remove_directory(directory / f"gen-{n}")
        if in_force is None:  # only a candidate, or nothing: the provisioned pair is in force
            durable_unlink(directory / CURRENT)  # last: until then a start still sees the links missing
    link_flat_names(directory)
    for which in ("previous", "new"):  # once the links are there: the migrated pairs, or a cut's leftover half
        for path in _flat_pair(directory, which):
            path.unlink(missing_ok=True)
    fsync_directory(directory)


def discard(directory: Path) -> None:
    """Forget every generation and flat pair (the station was re-provisioned; redone at the next
    start if a cut interrupts it, since the saved state still names the old provisioning)."""
    (directory / CURRENT).unlink(missing_ok=True)
    for n in _numbers_in_use(directory):
        durable_remove_directory(directory / f"gen-{n}")
    for which in FLAT:
        for path in _flat_pair(directory, which):
            path.unlink(missing_ok=True)
