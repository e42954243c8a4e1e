"""Root side of a daemon-requested update: take the request in without trusting the daemon's directory.

`station-update --from-request` runs as root, but the request, the artefact and the place the
result goes all live in the state directory of the unprivileged `station` user, who can put
symlinks, FIFOs or hard links there at any moment. So here:

- no path below a directory another user controls is ever opened by name: every directory is
  opened component by component with O_NOFOLLOW | O_DIRECTORY, and files with O_NOFOLLOW relative
  to that directory's descriptor (openat); a symlink anywhere fails the request;
- files must be regular (a FIFO would block root, a device would be read) and small enough;
- the artefact is copied into a root-owned staging directory and everything is checked on that
  copy (SHA-256 from the request; the signature; the signing certificate against the manufacturer
  roots root provisioned in `etc/station/firmware-roots/`, never the CSMS's; the version inside
  the wheel, which must be the one requested): pip installs only the copy, never a path the
  request names;
- the result is written to a fresh temporary file (O_CREAT | O_EXCL | O_NOFOLLOW: never an
  existing file or link) through the directory descriptor, handed to the directory's owner, and
  renamed over `result.json` (a rename replaces a link, it never writes through it).
"""

from __future__ import annotations

import contextlib
import email.parser
import hashlib
import json
import os
import re
import secrets
import stat
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from station.update_request import UpdateError, check_version

REQUEST_MAX_BYTES = 64 * 1024
ARTEFACT_MAX_BYTES = 64 * 1024 * 1024
"""As the daemon's download limit (station.trust.firmware.DEFAULT_MAX_BYTES)."""
TRUST_DIR = Path("etc/station/firmware-roots")
"""Below the device root: the manufacturer roots (PEM) a signing certificate must chain to; root's alone."""
DEV_UNSIGNED_MARKER = Path("etc/station/firmware-allow-unsigned")
"""Below the device root: present (root's) only on a development install that accepts unsigned firmware."""
ANCHOR_MAX_BYTES = 256 * 1024
METADATA_MAX_BYTES = 256 * 1024
PROJECT = "ocpp-station"
NO_ANCHOR = ("no manufacturer root provisioned by root (/etc/station/firmware-roots/, install.sh --firmware-root):"
             " this station installs no firmware the daemon asks for")
_METADATA = re.compile(r"^[^/]+\.dist-info/METADATA$")
STAGING_DIR = Path("var/lib/station-update/staging")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,200}$")

_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC


@contextlib.contextmanager
def open_dir(path: Path) -> Iterator[int]:
    """A descriptor of directory `path`, reached without following any symlink on the way."""
    path = Path(os.path.abspath(path))
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in path.parts[1:]:
            try:
                child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | _FLAGS, dir_fd=fd)
            except OSError as exc:
                raise UpdateError(f"{path}: {part!r} is not a plain directory ({exc.strerror})") from None
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def read_small(dir_fd: int, name: str, limit: int) -> bytes:
    """A regular file's bytes (no link, FIFO or device; at most `limit` bytes)."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | _FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        raise UpdateError(f"{name}: cannot open safely ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise UpdateError(f"{name} is not a regular file")
        if info.st_size > limit:
            raise UpdateError(f"{name} is larger than {limit} bytes")
        return handle.read(limit + 1)[:limit]


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


def stage(request: Request, state_dir: Path, root: Path) -> Path:
    """Copy the artefact into the root-owned staging directory, hashing it; the copy's path."""
    staging = root / STAGING_DIR
    staging.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(staging, 0o700)
    target = staging / request.artefact_name
    target.unlink(missing_ok=True)
    digest = hashlib.sha256()
    with open_dir(state_dir / "firmware") as firmware:
        try:
            src = os.open(request.artefact_name, os.O_RDONLY | os.O_NONBLOCK | _FLAGS, dir_fd=firmware)
        except OSError as exc:
            raise UpdateError(f"artefact {request.artefact_name}: cannot open safely ({exc.strerror})") from None
    with os.fdopen(src, "rb") as source:
        info = os.fstat(source.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size > ARTEFACT_MAX_BYTES:
            raise UpdateError(f"artefact {request.artefact_name} is not a regular file of at most {ARTEFACT_MAX_BYTES} bytes")
        out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _FLAGS, 0o600)
        with os.fdopen(out, "wb") as copy:
            copied = 0
            while chunk := source.read(1024 * 1024):
                copied += len(chunk)
                if copied > ARTEFACT_MAX_BYTES:
                    raise UpdateError(f"artefact {request.artefact_name} grew beyond {ARTEFACT_MAX_BYTES} bytes")
                digest.update(chunk)
                copy.write(chunk)
    if digest.hexdigest() != request.sha256:
        target.unlink(missing_ok=True)
        raise UpdateError("SHA-256 of the artefact does not match the request (checked by the root side)")
    return target


class Refused(UpdateError):
    """The root side will not install this artefact; `kind` says which check refused it, so that the
    daemon can tell the CSMS (signature → InvalidSignature, verification → InstallVerificationFailed)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


def _root_owned_dir(path: Path) -> bool:
    """A directory of root's (the updater's own user), writable by nobody else; anything else is no anchor store."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid() and not info.st_mode & 0o022


def trust_anchors(root: Path) -> list[str]:
    """The manufacturer roots root provisioned (install.sh --firmware-root): PEM texts, none if the
    directory is missing or not root's alone. Roots the CSMS installs over OCPP never count here."""
    directory = root / TRUST_DIR
    if not (_root_owned_dir(directory.parent) and _root_owned_dir(directory)):
        return []
    anchors = []
    for path in sorted(directory.glob("*.pem")):
        info = os.lstat(path)
        if stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid() and info.st_size <= ANCHOR_MAX_BYTES:
            anchors.append(path.read_text(errors="replace"))
    return anchors


def unsigned_allowed(root: Path) -> bool:
    """A development install said so (install.sh --dev-allow-unsigned-firmware): a root-owned marker."""
    marker = root / DEV_UNSIGNED_MARKER
    try:
        info = os.lstat(marker)
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid() and _root_owned_dir(marker.parent)


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
    with open_dir(directory) as dir_fd:
        owner = os.fstat(dir_fd)
        tmp = f".result.{secrets.token_hex(8)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _FLAGS, 0o640, dir_fd=dir_fd)
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(result, handle, sort_keys=True)
                handle.flush()
                os.fchmod(handle.fileno(), 0o640)
                with contextlib.suppress(PermissionError):
                    os.fchown(handle.fileno(), owner.st_uid, owner.st_gid)
                os.fsync(handle.fileno())
            os.rename(tmp, "result.json", src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dir_fd)
            raise


def remove_request(directory: Path, name: str) -> None:
    """Consume the request (unlinks the name itself, whatever it is)."""
    with contextlib.suppress(OSError, UpdateError), open_dir(directory) as dir_fd:
        os.unlink(name, dir_fd=dir_fd)
