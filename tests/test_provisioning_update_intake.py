"""The root-side update flow takes the daemon's request without trusting the daemon's directory.

Real files, real symlinks, real pip. When the tests run as root (as station-update does), the
daemon's state directory belongs to `nobody` and the victim is a root-owned 0600 file: the
probe that once turned such a file into `640 nobody:nogroup` holding the result JSON.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.x509.oid import NameOID

from station.field import update
from tests.provisioning_support import build_fake_wheel
from tests.test_provisioning_update import device as device_tree  # noqa: F401 — fixture

FAST = {"grace_seconds": 0.5, "interval": 0.05}
NOBODY = 65534
VICTIM_TEXT = "root:x:0:0:root:/root:/bin/bash\n"


@pytest.fixture
def device(device_tree: dict[str, Path]) -> Path:
    """The update tests' device (1.0.0 current, systemctl stubbed) with the daemon's state directory."""
    root = device_tree["root"]
    (root / "var/lib/station/update").mkdir(parents=True)
    (root / "var/lib/station/firmware").mkdir(parents=True)
    return root


def state(root: Path) -> Path:
    return root / "var/lib/station"


def victim(tmp_path: Path) -> Path:
    """A root-owned 0600 file outside the daemon's reach (like /etc/shadow)."""
    path = tmp_path / "victim"
    path.write_text(VICTIM_TEXT)
    path.chmod(0o600)
    return path


def assert_untouched(path: Path) -> None:
    info = path.stat()
    assert path.read_text() == VICTIM_TEXT
    assert stat.S_IMODE(info.st_mode) == 0o600 and (info.st_uid, info.st_gid) == (os.getuid(), os.getgid())


def give_to_daemon_user(root: Path) -> None:
    """As on a device: the state directory belongs to the unprivileged daemon user."""
    if os.geteuid() != 0:
        return
    for path in [state(root), *state(root).rglob("*")]:
        os.lchown(path, NOBODY, NOBODY)


def request(root: Path, version: str, *, sha256: str | None = None, artefact: Path | None = None,
            **extra: str) -> tuple[Path, Path]:
    wheel = build_fake_wheel(state(root) / "firmware", version)
    digest = sha256 or hashlib.sha256(wheel.read_bytes()).hexdigest()
    path = update.request_update(artefact or wheel, version, sha256=digest, state_dir=state(root), **extra)
    return path, wheel


def installed(root: Path, version: str) -> bool:
    return (update.Layout(root).release(version) / ".complete").exists()


# ------------------------------------------------------------------------------- symlinks
def test_a_symlinked_result_file_is_replaced_never_written_through(device: Path, tmp_path: Path) -> None:
    target = victim(tmp_path)
    path, _ = request(device, "1.1.0")
    (path.parent / "result.json").symlink_to(target)
    give_to_daemon_user(device)
    result = update.run_request(path, root=device, **FAST)
    assert result.ok and result.action == "updated"
    assert_untouched(target)
    written = path.parent / "result.json"
    assert not written.is_symlink() and json.loads(written.read_text())["action"] == "updated"
    if os.geteuid() == 0:
        info = written.stat()
        assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (NOBODY, 0o640)


def test_a_symlinked_update_directory_is_refused(device: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = victim(elsewhere)
    path, _ = request(device, "1.1.0")
    real = state(device) / "update.real"
    path.parent.rename(real)
    (state(device) / "update").symlink_to(real)
    give_to_daemon_user(device)
    result = update.run_request(state(device) / "update/request.json", root=device, **FAST)
    assert not result.ok and "not a plain directory" in result.detail
    assert not installed(device, "1.1.0")
    assert_untouched(target)


def test_a_symlinked_request_is_refused(device: Path, tmp_path: Path) -> None:
    target = victim(tmp_path)
    directory = state(device) / "update"
    (directory / "request.json").symlink_to(target)
    give_to_daemon_user(device)
    result = update.run_request(directory / "request.json", root=device, **FAST)
    assert not result.ok and "cannot open safely" in result.detail
    assert_untouched(target)


def test_a_fifo_as_request_is_refused_without_blocking(device: Path) -> None:
    fifo = state(device) / "update/request.json"
    os.mkfifo(fifo)
    result = update.run_request(fifo, root=device, **FAST)
    assert not result.ok and "not a regular file" in result.detail


def test_a_symlinked_artefact_is_refused(device: Path, tmp_path: Path) -> None:
    outside = build_fake_wheel(tmp_path / "outside", "1.1.0")
    path, wheel = request(device, "1.1.0")
    wheel.unlink()
    wheel.symlink_to(outside)
    give_to_daemon_user(device)
    result = update.run_request(path, root=device, **FAST)
    assert not result.ok and "cannot open safely" in result.detail
    assert not installed(device, "1.1.0")


# ------------------------------------------------------------------------- the artefact
def test_an_artefact_outside_the_firmware_directory_is_never_installed(device: Path, tmp_path: Path) -> None:
    outside = build_fake_wheel(tmp_path / "outside", "1.1.0")
    path, _ = request(device, "1.1.0", artefact=outside, sha256=hashlib.sha256(outside.read_bytes()).hexdigest())
    result = update.run_request(path, root=device, **FAST)
    assert not result.ok and "firmware directory" in result.detail
    assert not installed(device, "1.1.0")


def test_an_artefact_swapped_after_the_request_fails_the_root_sides_checksum(device: Path) -> None:
    path, wheel = request(device, "1.1.0")
    wheel.write_bytes(wheel.read_bytes() + b"\0")  # the daemon user changes it after asking
    result = update.run_request(path, root=device, **FAST)
    assert not result.ok and "SHA-256" in result.detail
    assert not installed(device, "1.1.0")


def test_a_request_without_a_checksum_is_refused(device: Path) -> None:
    path, _ = request(device, "1.1.0")
    data = json.loads(path.read_text())
    del data["sha256"]
    path.write_text(json.dumps(data))
    result = update.run_request(path, root=device, **FAST)
    assert not result.ok and "SHA-256" in result.detail


# --------------------------------------------------------------------------- signatures
def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: str, issuer_key: ec.EllipticCurvePrivateKey,
          *, ca: bool) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    return (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .sign(issuer_key, hashes.SHA256()))


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def signer(anchor_dir: Path | None) -> tuple[ec.EllipticCurvePrivateKey, str]:
    """A signing key and its certificate, issued by a root that is (or is not) installed as anchor."""
    root_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    root_cert = _cert("Manufacturer Root", root_key, "Manufacturer Root", root_key, ca=True)
    if anchor_dir is not None:
        anchor_dir.mkdir(parents=True, exist_ok=True)
        (anchor_dir / "manufacturer.pem").write_text(_pem(root_cert))
    return key, _pem(_cert("Firmware Signing", key, "Manufacturer Root", root_key, ca=False))


def signed_request(root: Path, version: str, key: ec.EllipticCurvePrivateKey, cert: str, *,
                   tamper: bool = False) -> Path:
    wheel = build_fake_wheel(state(root) / "firmware", version)
    digest = hashlib.sha256(wheel.read_bytes()).digest()
    signature = key.sign(digest if not tamper else hashlib.sha256(b"other").digest(), ec.ECDSA(Prehashed(hashes.SHA256())))
    return update.request_update(wheel, version, sha256=digest.hex(), state_dir=state(root),
                                 signing_certificate=cert, signature=base64.b64encode(signature).decode())


def test_a_release_signed_under_an_installed_anchor_is_installed(device: Path) -> None:
    key, cert = signer(device / "etc/station/firmware-roots")
    result = update.run_request(signed_request(device, "1.1.0", key, cert), root=device, **FAST)
    assert result.ok and "chains to an installed trust anchor" in result.detail


def test_with_anchors_installed_an_unsigned_release_is_refused(device: Path) -> None:
    signer(device / "etc/station/firmware-roots")
    path, _ = request(device, "1.1.0")
    result = update.run_request(path, root=device, **FAST)
    assert not result.ok and "unsigned" in result.detail
    assert not installed(device, "1.1.0")


def test_a_signing_certificate_from_another_root_is_refused(device: Path) -> None:
    signer(device / "etc/station/firmware-roots")
    key, cert = signer(None)
    result = update.run_request(signed_request(device, "1.1.0", key, cert), root=device, **FAST)
    assert not result.ok and "does not chain" in result.detail
    assert not installed(device, "1.1.0")


def test_a_signature_over_other_bytes_is_refused_by_the_root_side(device: Path) -> None:
    key, cert = signer(device / "etc/station/firmware-roots")
    result = update.run_request(signed_request(device, "1.1.0", key, cert, tamper=True), root=device, **FAST)
    assert not result.ok and "signature" in result.detail
    assert not installed(device, "1.1.0")
