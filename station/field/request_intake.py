"""Root side of a daemon-requested update: take the request in without trusting the daemon's directory.

`station-update --from-request` runs as root, but the request, the artefact and the place the
result goes all live in the state directory of the unprivileged `station` user, who can put
symlinks, FIFOs or hard links there at any moment. So here:

- no path below a directory another user controls is ever opened by name: every directory is
  opened component by component with O_NOFOLLOW | O_DIRECTORY, and files with O_NOFOLLOW relative
  to that directory's descriptor (openat); a symlink anywhere fails the request;
- files must be regular (a FIFO would block root, a device would be read) and small enough;
- the artefact is copied into a root-owned staging directory and everything is checked on that
  copy (SHA-256 from the request; the signature, and against the root-owned trust anchors in
  `etc/station/firmware-roots/` when the device has them): pip installs only the copy, never a
  path the request names;
- the result is written to a fresh temporary file (O_CREAT | O_EXCL | O_NOFOLLOW: never an
  existing file or link) through the directory descriptor, handed to the directory's owner, and
  renamed over `result.json` (a rename replaces a link, it never writes through it).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from station.update_request import UpdateError, check_version

REQUEST_MAX_BYTES = 64 * 1024
ARTEFACT_MAX_BYTES = 64 * 1024 * 1024
"""As the daemon's download limit (station.trust.firmware.DEFAULT_MAX_BYTES)."""
TRUST_DIR = Path("etc/station/firmware-roots")
"""Below the device root: PEM certificates a signing certificate must chain to (root-owned)."""
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


def trust_anchors(root: Path) -> list[str]:
    directory = root / TRUST_DIR
    if not directory.is_dir():
        return []
    return [p.read_text() for p in sorted(directory.glob("*.pem")) if p.is_file()]


def verify(request: Request, staged: Path, root: Path, now: datetime | None = None) -> str:
    """Check the signature on the staged copy; how it was checked (raises UpdateError when it fails).

    With trust anchors installed, a signature is required and the signing certificate must chain
    to one of them (each link signed by the next, all within their validity). Without anchors, a
    signature present is still checked against its own certificate (integrity, not origin).
    """
    anchors = trust_anchors(root)
    if not request.signature or not request.signing_certificate:
        if anchors:
            raise UpdateError("unsigned artefact: this station only installs signed releases")
        return "checksum only (unsigned; no trust anchors installed)"
    from station.trust.firmware import verify_signature

    digest = bytes.fromhex(request.sha256)
    problem = verify_signature(request.signing_certificate, request.signature, digest, staged)
    if problem:
        raise UpdateError(f"signature check by the root side failed: {problem}")
    if not anchors:
        return "signature verified against the request's certificate (no trust anchors installed)"
    problem = _chain_problem(request.signing_certificate, anchors, now or datetime.now(UTC))
    if problem:
        raise UpdateError(f"signing certificate refused by the root side: {problem}")
    return "signature verified; signing certificate chains to an installed trust anchor"


def _chain_problem(chain_pem: str, anchors_pem: list[str], now: datetime) -> str | None:
    from cryptography import x509

    try:
        chain = x509.load_pem_x509_certificates(chain_pem.encode())
        anchors = [c for pem in anchors_pem for c in x509.load_pem_x509_certificates(pem.encode())]
    except ValueError as exc:
        return f"unreadable certificate: {exc}"[:200]
    for cert in chain:
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            return "a certificate of the chain is outside its validity period"
    for child, parent in zip(chain, chain[1:]):
        try:
            child.verify_directly_issued_by(parent)
        except Exception:  # noqa: BLE001 — InvalidSignature, unsupported key types
            return "the chain is broken"
    last = chain[-1]
    for anchor in anchors:
        if last == anchor:
            return None
        with contextlib.suppress(Exception):
            last.verify_directly_issued_by(anchor)
            if anchor.not_valid_before_utc <= now <= anchor.not_valid_after_utc:
                return None
    return "it does not chain to an installed trust anchor"


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
