"""The root-side update flow takes the daemon's request without trusting the daemon's directory.

Real files, real symlinks, real pip. When the tests run as root (as station-update does), the
daemon's state directory belongs to `nobody` and the victim is a root-owned 0600 file: the
probe that once turned such a file into `640 nobody:nogroup` holding the result JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import zipfile
from pathlib import Path

import pytest

from station.field import request_intake, update
from tests.pki_helpers import FLAWS, FirmwareSigner, make_ca, make_firmware_signer
from tests.provisioning_support import build_fake_wheel, calls
from tests.test_provisioning_update import device as device_tree  # noqa: F401 — fixture

FAST = {"grace_seconds": 0.5, "interval": 0.05}
NOBODY = 65534
VICTIM_TEXT = "root:x:0:0:root:/root:/bin/bash\n"


SIGNER_ROOT = make_ca("Orge manufacturer root (test)", days=30)
SIGNER = make_firmware_signer(root=SIGNER_ROOT)
"""The manufacturer's signing certificate; root provisioned its root on every test device."""


def provision_root(root: Path, signer: FirmwareSigner = SIGNER) -> Path:
    """What install.sh --firmware-root does: the manufacturer root, root-owned, in etc/station/firmware-roots/."""
    anchors = root / request_intake.TRUST_DIR
    anchors.mkdir(parents=True, exist_ok=True)
    path = anchors / "manufacturer.pem"
    path.write_text(signer.root_pem)
    return path


@pytest.fixture
def device(device_tree: dict[str, Path]) -> Path:
    """The update tests' device (1.0.0 current, systemctl stubbed, manufacturer root provisioned)
    with the daemon's state directory."""
    root = device_tree["root"]
    (root / "var/lib/station/update").mkdir(parents=True)
    (root / "var/lib/station/firmware").mkdir(parents=True)
    provision_root(root)
    return root


@pytest.fixture
def bare_device(device_tree: dict[str, Path]) -> Path:
    """A device installed without --firmware-root: no manufacturer root on the root side."""
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
            signer: FirmwareSigner | None = SIGNER, wheel_version: str | None = None) -> tuple[Path, Path]:
    """The daemon's request for `version` (a signed wheel of `wheel_version`, by default the same;
    `signer=None`: checksum only)."""
    wheel = artefact or build_fake_wheel(state(root) / "firmware", wheel_version or version)
    data = wheel.read_bytes()
    digest = sha256 or hashlib.sha256(data).hexdigest()
    signed = {"signing_certificate": signer.certificate_pem, "signature": signer.sign(data)} if signer else {}
    path = update.request_update(wheel, version, sha256=digest, state_dir=state(root), **signed)
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


@pytest.mark.skipif(os.geteuid() != 0, reason="the link must be the daemon user's: safefile follows a link of"
                    " our own in a directory only we can write (like /var/run -> /run)")
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


def test_a_hard_linked_artefact_is_refused(device: Path, tmp_path: Path) -> None:
    """A second name for the artefact is a file the daemon's user can change behind the request's back."""
    path, wheel = request(device, "1.1.0")
    os.link(wheel, state(device) / "firmware/second-name")
    give_to_daemon_user(device)
    result = update.run_request(path, root=device, **FAST)
    assert not result.ok and "hard links" in result.detail
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
def test_a_release_signed_under_the_provisioned_manufacturer_root_is_installed(device: Path) -> None:
    path, _ = request(device, "1.1.0")
    result = update.run_request(path, root=device, **FAST)
    assert result.ok and "chains to a manufacturer root provisioned by root" in result.detail
    assert installed(device, "1.1.0")


def test_with_anchors_installed_an_unsigned_release_is_refused(device: Path) -> None:
    path, _ = request(device, "1.1.0", signer=None)
    result = update.run_request(path, root=device, **FAST)
    assert not result.ok and "unsigned" in result.detail and result.refused == "signature"
    assert not installed(device, "1.1.0")


def test_a_checksum_only_request_is_refused_when_no_manufacturer_root_is_provisioned(bare_device: Path) -> None:
    """The station user skips the CSMS and leaves a request with a checksum of its own artefact."""
    path, _ = request(bare_device, "1.1.0", signer=None)
    give_to_daemon_user(bare_device)
    result = update.run_request(path, root=bare_device, **FAST)
    assert not result.ok and result.refused == "signature" and "no manufacturer root provisioned" in result.detail
    assert not installed(bare_device, "1.1.0")
    written = json.loads((path.parent / "result.json").read_text())
    assert written["refused"] == "signature" and not written["ok"]


def test_a_root_the_csms_installed_is_not_trusted_by_the_root_side(bare_device: Path) -> None:
    """The CSMS installs its own root over OCPP (the daemon's store) and signs firmware under it."""
    csms = make_firmware_signer()
    store = state(bare_device) / "pki/roots/ManufacturerRootCertificate"  # where InstallCertificate puts it
    store.mkdir(parents=True)
    (store / "csms.pem").write_text(csms.root_pem)
    path, _ = request(bare_device, "1.1.0", signer=csms)
    give_to_daemon_user(bare_device)
    result = update.run_request(path, root=bare_device, **FAST)
    assert not result.ok and result.refused == "signature" and "no manufacturer root provisioned" in result.detail
    assert not installed(bare_device, "1.1.0")


def test_a_signing_certificate_from_another_root_is_refused(device: Path) -> None:
    path, _ = request(device, "1.1.0", signer=make_firmware_signer())
    result = update.run_request(path, root=device, **FAST)
    assert not result.ok and "does not chain" in result.detail and result.refused == "signature"
    assert not installed(device, "1.1.0")


@pytest.mark.parametrize("flaw", FLAWS)
def test_the_root_side_refuses_a_signing_certificate_with_a_flaw(device: Path, flaw: str) -> None:
    signer = make_firmware_signer(flaw=flaw, root=SIGNER_ROOT)
    path, _ = request(device, "1.1.0", signer=signer)
    result = update.run_request(path, root=device, **FAST)
    assert not result.ok and "signing certificate refused by the root side" in result.detail
    assert result.refused == "signature"
    assert not installed(device, "1.1.0")


def test_a_signature_over_other_bytes_is_refused_by_the_root_side(device: Path) -> None:
    path, wheel = request(device, "1.1.0")
    data = json.loads(path.read_text())
    data["signature"] = SIGNER.sign(b"other bytes")
    path.write_text(json.dumps(data))
    result = update.run_request(path, root=device, **FAST)
    assert not result.ok and "signature" in result.detail and result.refused == "signature"
    assert not installed(device, "1.1.0")


def test_anchors_in_a_directory_others_may_write_are_not_trusted(device: Path) -> None:
    (device / request_intake.TRUST_DIR).chmod(0o777)
    path, _ = request(device, "1.1.0")
    result = update.run_request(path, root=device, **FAST)
    assert not result.ok and "no manufacturer root provisioned" in result.detail
    assert not installed(device, "1.1.0")


def test_a_development_install_accepts_a_checksum_only_request(bare_device: Path) -> None:
    (bare_device / request_intake.DEV_UNSIGNED_MARKER).parent.mkdir(parents=True, exist_ok=True)
    (bare_device / request_intake.DEV_UNSIGNED_MARKER).write_text("development install\n")
    path, _ = request(bare_device, "1.1.0", signer=None)
    result = update.run_request(path, root=bare_device, **FAST)
    assert result.ok and "development install" in result.detail


# ----------------------------------------------------------------------- versions, replays
def test_the_version_installed_is_the_one_inside_the_wheel(device: Path) -> None:
    path, _ = request(device, "1.1.0")
    result = update.run_request(path, root=device, **FAST)
    assert result.ok and result.version == "1.1.0"
    assert (update.Layout(device).release("1.1.0") / "VERSION").read_text() == "1.1.0\n"


def test_a_newer_signed_artefact_replayed_as_an_older_version_is_refused(device: Path) -> None:
    """A signed 2.0.0 wheel handed over as "0.9.0": never installed under a name it does not carry."""
    path, _ = request(device, "0.9.0", wheel_version="2.0.0")
    result = update.run_request(path, root=device, **FAST)
    assert not result.ok and result.refused == "verification"
    assert "names version 0.9.0 but the signed artefact is version 2.0.0" in result.detail
    assert update.Layout(device).installed() == ["1.0.0"] and calls_made(device) == []


def test_an_older_signed_release_is_refused_as_a_downgrade(device: Path) -> None:
    path, _ = request(device, "0.9.0")
    result = update.run_request(path, root=device, **FAST)
    assert not result.ok and result.refused == "downgrade" and "downgrade from 1.0.0 to 0.9.0" in result.detail
    assert not installed(device, "0.9.0") and current(device) == "1.0.0"


def test_root_may_allow_a_downgrade(device: Path) -> None:
    path, _ = request(device, "0.9.0")
    result = update.run_request(path, root=device, allow_downgrade=True, **FAST)
    assert result.ok and result.action == "updated" and current(device) == "0.9.0"


def test_replaying_the_current_release_changes_nothing(device: Path) -> None:
    path, _ = request(device, "1.0.0")
    result = update.run_request(path, root=device, **FAST)
    assert result.ok and result.action == "unchanged"
    assert calls_made(device) == [] and current(device) == "1.0.0"


def test_an_installed_release_is_not_switched_to_for_another_artefact_of_its_version(device: Path) -> None:
    path, _ = request(device, "1.1.0")
    assert update.run_request(path, root=device, **FAST).ok
    update.switch("1.0.0", root=device)
    other = build_fake_wheel(device / "other", "1.1.0")
    with zipfile.ZipFile(other, "a") as wheel:
        wheel.writestr("extra.txt", "a different build of 1.1.0")
    target = state(device) / "firmware" / other.name
    target.write_bytes(other.read_bytes())
    path, _ = request(device, "1.1.0", artefact=target)
    result = update.run_request(path, root=device, **FAST)
    assert not result.ok and "already installed from another artefact" in result.detail
    assert current(device) == "1.0.0"


def test_a_request_for_an_sdist_is_refused(device: Path) -> None:
    sdist = state(device) / "firmware" / "ocpp_station-1.1.0.tar.gz"
    sdist.write_bytes(b"not installed as root")
    path, _ = request(device, "1.1.0", artefact=sdist)
    result = update.run_request(path, root=device, **FAST)
    assert not result.ok and "wheels only" in result.detail and result.refused == "verification"


def current(root: Path) -> str | None:
    layout = update.Layout(root)
    return layout.version_of(layout.current)


def calls_made(root: Path) -> list[str]:
    return calls(root.parent / "bin" / "systemctl.log")
