"""Root side of a daemon-requested update: take the request in without trusting the daemon's directory.

`station-update --from-request` runs as root, but the request, the artefact and the place the
result goes all live in the state directory of the unprivileged `station` user, who can put
symlinks, FIFOs or hard links there at any moment. So here:

- every file operation goes through `station.storage.safefile`: directories are reached component by
  component without following a link the daemon's user could have planted, files are opened relative
  to that directory's descriptor with O_NOFOLLOW and checked on the descriptor (regular, one link,
  small enough: a FIFO would block root, a device would be read, a hard link would be another file);
- the artefact is copied into a root-owned staging directory and everything is checked on that
  copy (SHA-256 from the request; the signature; the signing certificate against the manufacturer
  roots root provisioned in `etc/station/firmware-roots/`, never the CSMS's; the version inside
  the wheel, which must be the one requested): pip installs only the copy, never a path the
  request names;
- the result is written to a fresh temporary file (O_CREAT | O_EXCL | O_NOFOLLOW: never an
  existing file or link) through the directory descriptor, handed to the directory's owner on that
  descriptor, and renamed over `result.json` (a rename replaces a link, it never writes through it).
"""

from __future__ import annotations

import contextlib
import email.parser
import hashlib
import json
import os
import re
import stat
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from station.storage import safefile
from station.update_request import PROJECT, UpdateError, check_version

REQUEST_MAX_BYTES = 64 * 1024
ARTEFACT_MAX_BYTES = 64 * 1024 * 1024
"""As the daemon's download limit (station.trust.firmware.DEFAULT_MAX_BYTES)."""
TRUST_DIR = Path("etc/station/firmware-roots")
"""Below the device root: the manufacturer roots (PEM) a signing certificate must chain to; root's alone."""
DEV_UNSIGNED_MARKER = Path("etc/station/firmware-allow-unsigned")
"""Below the device root: present (root's) only on a development install that accepts unsigned firmware."""
ANCHOR_MAX_BYTES = 256 * 1024
METADATA_MAX_BYTES = 256 * 1024
NO_ANCHOR = ("no manufacturer root provisioned by root (/etc/station/firmware-roots/, install.sh --firmware-root):"
             " this station installs no firmware the daemon asks for")
_METADATA = re.compile(r"^[^/]+\.dist-info/METADATA$")
STAGING_DIR = Path("var/lib/station-update/staging")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,200}$")


@contextlib.contextmanager
def open_dir(path: Path) -> Iterator[safefile.SafeDir]:
    """Directory `path`, reached without following a link the daemon's user could have planted."""
    try:
        directory = safefile.open_dir(path)
    except OSError as exc:
        raise UpdateError(f"{path}: not a plain directory ({exc.strerror or exc})") from None
    with directory:
        yield directory


def read_small(directory: safefile.SafeDir, name: str, limit: int) -> bytes:
    """A regular file's bytes (no link, FIFO, device or hard link; at most `limit` bytes)."""
    try:
        return directory.read_bytes(name, limit)
    except OSError as exc:
        raise UpdateError(f"{name}: cannot open safely ({exc.strerror or exc})") from None


@dataclass(frozen=True)
class Request:
    version: str
    artefact_name: str
    sha256: str
    signing_certificate: str | None
    signature: str | None


def parse_request(data: bytes, state_dir: Path) -> Request:
    """The request's fields, checked; the artefact must be a plain file in `<state_dir>/firmware/`."""
    try:
        raw = json.loads(data)
        version = check_version(str(raw["version"]))
        artefact = Path(str(raw["artefact"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise UpdateError(f"unreadable request: {exc.__class__.__name__}") from None
    if artefact.parent != state_dir / "firmware" or not _NAME.match(artefact.name):
        raise UpdateError("the artefact must be a file in the daemon's firmware directory")
    sha256 = str(raw.get("sha256") or "").lower()
    if not _HEX64.match(sha256):
        raise UpdateError("the request carries no SHA-256 of the artefact")
    cert, signature = raw.get("signing_certificate"), raw.get("signature")
    return Request(version, artefact.name, sha256,
                   str(cert) if cert else None, str(signature) if signature else None)


@contextlib.contextmanager
def staging_dir(root: Path) -> Iterator[safefile.SafeDir]:
    """The root-owned staging directory (0700; `/var/lib/station-update` is systemd's StateDirectory)."""
    with safefile.open_dir(root / STAGING_DIR.parent.parent, make=0o755) as var_lib, \
            var_lib.mkdir(STAGING_DIR.parent.name, mode=0o700) as state, \
            state.mkdir(STAGING_DIR.name, mode=0o700) as staging:
        os.fchmod(staging.fd, 0o700)
        yield staging


def stage(request: Request, state_dir: Path, root: Path) -> Path:
    """Copy the artefact into the root-owned staging directory, hashing it; the copy's path."""
    digest = hashlib.sha256()
    with open_dir(state_dir / "firmware") as firmware:
        try:
            source = firmware.open_read(request.artefact_name, ARTEFACT_MAX_BYTES)
        except OSError as exc:
            raise UpdateError(f"artefact {request.artefact_name}: cannot open safely ({exc.strerror or exc})") from None
    with source, staging_dir(root) as staging:
        with staging.writer(request.artefact_name, mode=0o600) as copy:
            copied = 0
            while chunk := source.read(1024 * 1024):
                copied += len(chunk)
                if copied > ARTEFACT_MAX_BYTES:
                    raise UpdateError(f"artefact {request.artefact_name} grew beyond {ARTEFACT_MAX_BYTES} bytes")
                digest.update(chunk)
                copy.write(chunk)
            if digest.hexdigest() != request.sha256:  # the copy is dropped, never renamed into place
                raise UpdateError("SHA-256 of the artefact does not match the request (checked by the root side)")
        return staging.path / request.artefact_name


def unstage(staged: Path) -> None:
    """Remove a staged copy (the name itself, in the root-owned staging directory)."""
    with contextlib.suppress(OSError), safefile.open_dir(staged.parent) as staging:
        staging.unlink(staged.name)


class Refused(UpdateError):
    """The root side will not install this artefact; `kind` says which check refused it, so that the
    daemon can tell the CSMS (signature → InvalidSignature, verification → InstallVerificationFailed)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


def _root_owned(info: os.stat_result) -> bool:
    """Root's (the updater's own user) and writable by nobody else; anything else is no anchor store."""
    return info.st_uid == os.geteuid() and not info.st_mode & 0o022


def _open_root_only(path: Path) -> safefile.SafeDir | None:
    """Directory `path` when it and its parent are root's alone (checked on their descriptors), else None."""
    try:
        with safefile.open_dir(path.parent) as parent:
            if not _root_owned(os.fstat(parent.fd)):
                return None
            directory = parent.subdir(path.name)
    except OSError:
        return None
    if not _root_owned(os.fstat(directory.fd)):
        directory.close()
        return None
    return directory


def trust_anchors(root: Path) -> list[str]:
    """The manufacturer roots root provisioned (install.sh --firmware-root): PEM texts, none if the
    directory is missing or not root's alone. Roots the CSMS installs over OCPP never count here."""
    directory = _open_root_only(root / TRUST_DIR)
    if directory is None:
        return []
    anchors = []
    with directory:
        for name in sorted(directory.listdir()):
            if name.startswith(".") or not name.endswith(".pem"):
                continue
            try:
                with directory.open_read(name, ANCHOR_MAX_BYTES) as handle:
                    if os.fstat(handle.fileno()).st_uid == os.geteuid():
                        anchors.append(handle.read(ANCHOR_MAX_BYTES).decode("utf-8", "replace"))
            except OSError:  # a link, a FIFO, a hard link, too large: no anchor
                continue
    return anchors


def unsigned_allowed(root: Path) -> bool:
    """A development install said so (install.sh --dev-allow-unsigned-firmware): a root-owned marker."""
    directory = _open_root_only(root / DEV_UNSIGNED_MARKER.parent)
    if directory is None:
        return False
    with directory:
        info = directory.lstat(DEV_UNSIGNED_MARKER.name)
    return info is not None and stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid()


def verify(request: Request, staged: Path, root: Path, now: datetime | None = None) -> str:
    """Check the staged copy's signature; how it was checked (raises Refused when it fails).

    The signing certificate must chain, as a code-signing certificate, to a manufacturer root that root
    provisioned in `etc/station/firmware-roots/` (`station.trust.signature` has the rules). With no such
    root, nothing the daemon asks for is installed, unless the install is a development one
    (`etc/station/firmware-allow-unsigned`, written by install.sh --dev-allow-unsigned-firmware).
    """
    from station.trust import signature

    anchors = trust_anchors(root)
    dev = unsigned_allowed(root)
    if not request.signature or not request.signing_certificate:
        if dev:
            return "checksum only: unsigned firmware allowed on this development install"
        if anchors:
            raise Refused("signature", "unsigned artefact: this station only installs signed releases")
        raise Refused("signature", NO_ANCHOR)
    problem = signature.verify_signature(request.signing_certificate, request.signature,
                                         bytes.fromhex(request.sha256), staged)
    if problem:
        raise Refused("signature", f"signature check by the root side failed: {problem}")
    if not anchors:
        if dev:
            return "signature verified against the request's own certificate (development install, no manufacturer root)"
        raise Refused("signature", NO_ANCHOR)
    problem = signature.chain_problem(request.signing_certificate, anchors, now or datetime.now(UTC))
    if problem:
        raise Refused("signature", f"signing certificate refused by the root side: {problem}")
    return "signature verified; signing certificate chains to a manufacturer root provisioned by root"


def artefact_version(staged: Path, project: str = PROJECT) -> str:
    """The version inside the staged wheel (its `.dist-info/METADATA`), which is what gets installed.

    Only wheels: an sdist runs its build code at install time, as root. The wheel must be a release of
    `project` and its file name must agree with its metadata (pip relies on the name).
    """
    parts = staged.name.split("-")
    if not staged.name.endswith(".whl") or len(parts) < 5:
        raise Refused("verification", f"{staged.name} is not a wheel: the update flow installs wheels only")
    try:
        with zipfile.ZipFile(staged) as wheel:
            entries = [i for i in wheel.infolist() if _METADATA.match(i.filename)]
            if len(entries) != 1 or entries[0].file_size > METADATA_MAX_BYTES:
                raise Refused("verification", f"{staged.name} has no single readable .dist-info/METADATA")
            text = wheel.read(entries[0])[:METADATA_MAX_BYTES].decode("utf-8", "replace")  # at most file_size bytes
    except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, NotImplementedError) as exc:
        raise Refused("verification", f"{staged.name} is not a readable wheel ({exc.__class__.__name__})") from None
    headers = email.parser.HeaderParser().parsestr(text.split("\n\n", 1)[0] + "\n")
    name, version = str(headers.get("Name") or ""), str(headers.get("Version") or "")
    if _canonical(name) != _canonical(project):
        raise Refused("verification", f"{staged.name} is a release of {name or 'nothing'!r}, not of {project}")
    try:
        check_version(version)
    except UpdateError:
        raise Refused("verification", f"{staged.name} names no usable version in its metadata") from None
    if _canonical(parts[0]) != _canonical(project) or parts[1] != version:
        raise Refused("verification", f"{staged.name}: the file name disagrees with the wheel's metadata (version {version})")
    return version


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def write_result(directory: Path, result: dict[str, object]) -> None:
    """result.json beside the request, owned by the directory's owner, never through a link."""
    with open_dir(directory) as target:
        owner = target.owner() if os.geteuid() == 0 else None
        target.replace("result.json", json.dumps(result, sort_keys=True), mode=0o640, owner=owner)


def remove_request(directory: Path, name: str) -> None:
    """Consume the request (unlinks the name itself, whatever it is)."""
    with contextlib.suppress(OSError, UpdateError), open_dir(directory) as target:
        target.unlink(name)
