"""provisioning/install.sh --root: staged, idempotent installation into a directory tree."""

from __future__ import annotations

import hashlib
import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

from tests.pki_helpers import FirmwareSigner, make_ca, make_firmware_signer
from tests.provisioning_support import build_fake_wheel, calls, fake_systemctl, offline_env, pip_command

REPO = Path(__file__).resolve().parents[1]
INSTALL = REPO / "provisioning/install.sh"


def seed_os_tree(root: Path) -> None:
    """The few /etc files a Debian root has, so the users stage works inside the tree."""
    etc = root / "etc"
    etc.mkdir(parents=True)
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (etc / "group").write_text("root:x:0:\ndialout:x:20:\n")
    (etc / "shadow").write_text("root:*:19000:0:99999:7:::\n")
    (etc / "gshadow").write_text("root:*::\ndialout:*::\n")
    for name in ("shadow", "gshadow"):
        (etc / name).chmod(0o640)


def tree_digest(root: Path) -> dict[str, str]:
    """Path → type, mode, owner and content hash / link target, for every entry of the tree."""
    digest: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        rel = str(path.relative_to(root))
        meta = f"{stat.filemode(info.st_mode)} {info.st_uid}:{info.st_gid}"
        if path.is_symlink():
            digest[rel] = f"{meta} -> {os.readlink(path)}"
        elif path.is_file():
            digest[rel] = f"{meta} {hashlib.sha256(path.read_bytes()).hexdigest()} {info.st_mtime_ns}"
        else:
            digest[rel] = meta
    return digest


def run_install(root: Path, wheel: Path, systemctl: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(INSTALL), "--root", str(root), "--no-apt", "--artefact", str(wheel),
         "--pip", pip_command(), *extra],
        capture_output=True, text=True, timeout=120, env=offline_env(SYSTEMCTL=str(systemctl)),
    )


@pytest.fixture(scope="module")
def installed_twice(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """One tree, install.sh run twice; both results and digests kept for the tests below."""
    base = tmp_path_factory.mktemp("install")
    root = base / "root"
    seed_os_tree(root)
    wheel = build_fake_wheel(base / "wheels", "1.2.3")
    systemctl, log = fake_systemctl(base / "bin")
    first = run_install(root, wheel, systemctl)
    after_first = tree_digest(root)
    second = run_install(root, wheel, systemctl)
    return {"root": root, "first": first, "second": second, "after_first": after_first,
            "after_second": tree_digest(root), "log": log, "wheel": wheel, "systemctl": systemctl}


def test_first_run_installs_the_release_behind_current(installed_twice: dict[str, object]) -> None:
    first = installed_twice["first"]
    assert isinstance(first, subprocess.CompletedProcess)
    assert first.returncode == 0, first.stdout + first.stderr
    root = Path(str(installed_twice["root"]))
    assert os.readlink(root / "opt/station/current") == "releases/1.2.3"
    assert (root / "opt/station/releases/1.2.3/venv/bin/station").exists()
    assert os.readlink(root / "usr/local/bin/station-update") == "/opt/station/current/venv/bin/station-update"


def test_every_stage_announces_itself(installed_twice: dict[str, object]) -> None:
    out = str(getattr(installed_twice["first"], "stdout"))
    for stage in ("preflight", "apt", "users", "release", "config", "firmware-roots", "udev", "units", "commands", "enable"):
        assert f"==> [{stage}]" in out


def test_second_run_changes_nothing(installed_twice: dict[str, object]) -> None:
    second = installed_twice["second"]
    assert isinstance(second, subprocess.CompletedProcess)
    assert second.returncode == 0, second.stdout + second.stderr
    assert not re.search(r"^\s+changed:", second.stdout, re.MULTILINE), second.stdout
    assert "nothing to change" in second.stdout
    assert installed_twice["after_second"] == installed_twice["after_first"]


def test_env_file_is_created_root_station_0640(installed_twice: dict[str, object]) -> None:
    """The daemon reads its configuration; only root changes it (root tools act on it)."""
    root = Path(str(installed_twice["root"]))
    env_file = root / "etc/ocpp_station.env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o640
    assert "OCPP_STATION_NAME=" in env_file.read_text()
    if os.geteuid() == 0:
        station_gid = next(int(line.split(":")[2]) for line in (root / "etc/group").read_text().splitlines()
                           if line.startswith("station:"))
        assert (env_file.stat().st_uid, env_file.stat().st_gid) == (0, station_gid)


@pytest.mark.skipif(os.geteuid() != 0, reason="creating users in a tree needs root")
def test_users_are_created_in_the_tree_with_their_groups(installed_twice: dict[str, object]) -> None:
    root = Path(str(installed_twice["root"]))
    groups = {line.split(":")[0]: line.split(":")[3] for line in (root / "etc/group").read_text().splitlines()}
    assert "station" in groups["dialout"].split(",")
    assert "station-api" in groups["station"].split(",")


def test_units_udev_rule_and_enable_calls(installed_twice: dict[str, object]) -> None:
    root = Path(str(installed_twice["root"]))
    assert (root / "etc/systemd/system/station.service").read_text() == (REPO / "systemd/station.service").read_text()
    rule = (root / "etc/udev/rules.d/90-station-esp32.rules").read_text()
    assert 'SYMLINK+="esp32"' in rule
    log = calls(Path(str(installed_twice["log"])))
    assert log and all(line.startswith(f"--root={root} enable station.service") for line in log)
    assert not any("restart" in line for line in log)


def test_existing_env_file_is_never_overwritten(tmp_path: Path) -> None:
    root = tmp_path / "root"
    seed_os_tree(root)
    (root / "etc/ocpp_station.env").write_text("OCPP_STATION_NAME='CP-7'\n")
    systemctl, _ = fake_systemctl(tmp_path / "bin")
    wheel = build_fake_wheel(tmp_path / "wheels", "1.0.0")
    result = run_install(root, wheel, systemctl)
    assert result.returncode == 0, result.stderr
    assert (root / "etc/ocpp_station.env").read_text() == "OCPP_STATION_NAME='CP-7'\n"
    assert stat.S_IMODE((root / "etc/ocpp_station.env").stat().st_mode) == 0o640


@pytest.mark.skipif(os.geteuid() != 0, reason="creating users in a tree needs root")
def test_an_env_file_the_station_user_owned_is_handed_back_to_root(tmp_path: Path) -> None:
    """An install before issue 21 left the file station-owned 0600: the daemon's user could rewrite
    what root tools act on. The installer gives it to root:station 0640, content unchanged."""
    root = tmp_path / "root"
    seed_os_tree(root)
    with (root / "etc/passwd").open("a") as passwd, (root / "etc/group").open("a") as group:
        passwd.write("station:x:990:990::/var/lib/station:/usr/sbin/nologin\n")
        group.write("station:x:990:\n")
    env = root / "etc/ocpp_station.env"
    env.write_text("OCPP_STATION_NAME='CP-7'\n")
    os.chown(env, 990, 990)
    env.chmod(0o600)
    systemctl, _ = fake_systemctl(tmp_path / "bin")
    result = run_install(root, build_fake_wheel(tmp_path / "wheels", "1.0.0"), systemctl)
    assert result.returncode == 0, result.stderr
    info = env.stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (0, 990, 0o640)
    assert env.read_text() == "OCPP_STATION_NAME='CP-7'\n"
    assert "changed: owner root:station" in result.stdout


def test_failure_names_the_stage(tmp_path: Path) -> None:
    systemctl, _ = fake_systemctl(tmp_path / "bin")
    broken = tmp_path / "ocpp_station-0.0.1-py3-none-any.whl"
    broken.write_bytes(b"not a zip")
    result = run_install(tmp_path / "root", broken, systemctl)
    assert result.returncode != 0
    assert "stage 'release' failed" in result.stderr


def test_firmware_roots_are_installed_root_owned_for_the_update_flow(tmp_path: Path) -> None:
    anchors = tmp_path / "given"
    anchors.mkdir()
    (anchors / "manufacturer.pem").write_text(make_firmware_signer().root_pem)
    root = tmp_path / "root"
    seed_os_tree(root)
    systemctl, _ = fake_systemctl(tmp_path / "bin")
    wheel = build_fake_wheel(tmp_path / "wheels", "1.0.0")
    first = run_install(root, wheel, systemctl, "--firmware-root", str(anchors / "manufacturer.pem"))
    assert first.returncode == 0, first.stderr
    installed = root / "etc/station/firmware-roots/manufacturer.pem"
    assert installed.read_bytes() == (anchors / "manufacturer.pem").read_bytes()
    assert stat.S_IMODE(installed.stat().st_mode) == 0o644 and installed.stat().st_uid == os.getuid()
    for directory in (installed.parent, installed.parent.parent):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o755 and directory.stat().st_uid == os.getuid()
    second = run_install(root, wheel, systemctl, "--firmware-root", str(anchors / "manufacturer.pem"))
    assert f"unchanged: {installed}" in second.stdout


def test_a_firmware_root_that_is_not_a_certificate_fails_its_stage(tmp_path: Path) -> None:
    bogus = tmp_path / "root.pem"
    bogus.write_text("hello\n")
    systemctl, _ = fake_systemctl(tmp_path / "bin")
    result = run_install(tmp_path / "root", build_fake_wheel(tmp_path / "wheels", "1.0.0"), systemctl,
                         "--firmware-root", str(bogus))
    assert result.returncode != 0 and "stage 'firmware-roots' failed" in result.stderr


def test_the_docs_give_the_env_file_the_owner_and_mode_the_installer_sets() -> None:
    """The env file holds the CSMS password and root tools act on it: docs that tell a technician
    another owner or mode invite a wrong fix."""
    installer = INSTALL.read_text()
    assert 'chmod 0640 "$ENV_FILE"' in installer and 'want="0:$(id_of group station)"' in installer
    for doc in ("docs/configuration.md", "docs/provisioning.md"):
        text = " ".join((REPO / doc).read_text().split())
        statements = re.findall(r"[^.]*ocpp_station\.env[^.]*\.|The file holds secrets[^.]*\.", text)
        said = " ".join(statements)
        assert "0640" in said and "station" in said and "root" in said, (doc, statements)
        assert "0600" not in said, (doc, statements)


def test_the_tree_names_its_device_paths_not_the_build_directory(installed_twice: dict[str, object]) -> None:
    """Copied to / (an image), the tree's venv scripts must find their interpreter at /opt/station/..."""
    root = Path(str(installed_twice["root"]))
    venv = root / "opt/station/releases/1.2.3/venv"
    assert (venv / "bin/station").read_text().splitlines()[0] == "#!/opt/station/releases/1.2.3/venv/bin/python"
    for path in [venv / "pyvenv.cfg", *(p for p in (venv / "bin").iterdir() if p.is_file() and not p.is_symlink())]:
        assert str(root) not in path.read_text(errors="replace"), path


def _can_make_mount_namespaces() -> bool:
    try:
        return subprocess.run(["unshare", "-m", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.mark.skipif(not _can_make_mount_namespaces(), reason="needs unshare -m (root with CAP_SYS_ADMIN)")
def test_a_tree_copied_to_the_device_paths_runs_there(installed_twice: dict[str, object], tmp_path: Path) -> None:
    """The image case: the tree is copied elsewhere (the build directory is gone) and seen at /opt/station."""
    import shutil

    root = Path(str(installed_twice["root"]))
    image = tmp_path / "image"
    shutil.copytree(root / "opt/station", image / "opt/station", symlinks=True)
    script = (  # a private mount namespace: the build tree hidden, the copy at the device's path
        f'mount -t tmpfs none "{root}" && mount -t tmpfs none /opt && mkdir /opt/station && '
        f'mount --bind "{image}/opt/station" /opt/station && exec /opt/station/current/venv/bin/station --once'
    )
    result = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert '"software_version": "1.2.3"' in result.stdout


# ------------------------------------------------------------------ firmware trust in a fresh tree
def daemon_request(root: Path, version: str, signer: FirmwareSigner | None) -> Path:
    """The daemon's hand-over in the tree: a (signed) wheel in var/lib/station/firmware, request.json."""
    from station.field import update

    state = root / "var/lib/station"
    wheel = build_fake_wheel(state / "firmware", version)
    data = wheel.read_bytes()
    signed = {"signing_certificate": signer.certificate_pem, "signature": signer.sign(data)} if signer else {}
    return update.request_update(wheel, version, sha256=hashlib.sha256(data).hexdigest(), state_dir=state, **signed)


@pytest.fixture
def updater_env(installed_twice: dict[str, object], monkeypatch: pytest.MonkeyPatch) -> None:
    """station-update's environment in a tree: stub systemctl, the test pip offline, a smoke test that passes."""
    monkeypatch.setenv("SYSTEMCTL", str(installed_twice["systemctl"]))
    monkeypatch.setenv("STATION_PIP", pip_command())
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("STATION_SMOKE_CMD", "true")


@pytest.fixture(scope="module")
def provisioned(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A fresh tree installed with the manufacturer root (install.sh --firmware-root)."""
    base = tmp_path_factory.mktemp("provisioned")
    root = base / "root"
    seed_os_tree(root)
    manufacturer = make_ca("Orge manufacturer root (test)", days=30)
    signer = make_firmware_signer(root=manufacturer)
    (base / "manufacturer.pem").write_text(signer.root_pem)
    systemctl, _ = fake_systemctl(base / "bin")
    result = run_install(root, build_fake_wheel(base / "wheels", "1.2.3"), systemctl,
                         "--firmware-root", str(base / "manufacturer.pem"))
    assert result.returncode == 0, result.stdout + result.stderr
    return {"root": root, "signer": signer, "manufacturer": manufacturer, "systemctl": systemctl}


def test_a_fresh_tree_refuses_firmware_until_a_manufacturer_root_is_provisioned(
        installed_twice: dict[str, object], updater_env: None) -> None:
    from station.field import update

    root = Path(str(installed_twice["root"]))
    assert "no manufacturer root provisioned" in str(getattr(installed_twice["first"], "stdout"))
    result = update.run_request(daemon_request(root, "1.3.0", make_firmware_signer()), root=root, grace_seconds=1, interval=0.05)
    assert not result.ok and result.refused == "signature" and "no manufacturer root provisioned" in result.detail
    assert not (root / "opt/station/releases/1.3.0").exists()


def test_with_a_provisioned_root_a_correctly_signed_update_installs(provisioned: dict[str, object], updater_env: None) -> None:
    from station.field import update

    root, signer = Path(str(provisioned["root"])), provisioned["signer"]
    assert isinstance(signer, FirmwareSigner)
    result = update.run_request(daemon_request(root, "1.3.0", signer), root=root, grace_seconds=1, interval=0.05)
    assert result.ok and result.action == "updated", result.detail
    assert os.readlink(root / "opt/station/current") == "releases/1.3.0"


@pytest.mark.parametrize("attack", ["downgrade", "ca-false-issuer", "csms-installed-root", "checksum-only"])
def test_with_a_provisioned_root_the_attacks_are_refused(provisioned: dict[str, object], updater_env: None,
                                                        attack: str) -> None:
    from station.field import update

    root, signer, manufacturer = Path(str(provisioned["root"])), provisioned["signer"], provisioned["manufacturer"]
    assert isinstance(signer, FirmwareSigner) and isinstance(manufacturer, tuple)
    before = os.readlink(root / "opt/station/current")
    version, used = {
        "downgrade": ("1.0.0", signer),
        "ca-false-issuer": ("1.4.0", make_firmware_signer(flaw="ca-false-issuer", root=manufacturer)),
        "csms-installed-root": ("1.4.0", make_firmware_signer()),  # the CSMS's own root, installed over OCPP
        "checksum-only": ("1.4.0", None),
    }[attack]
    result = update.run_request(daemon_request(root, version, used), root=root, grace_seconds=1, interval=0.05)
    assert not result.ok and result.refused in ("signature", "downgrade"), result.detail
    assert os.readlink(root / "opt/station/current") == before
    assert not (root / f"opt/station/releases/{version}").exists()


def test_a_development_install_says_so_loudly_and_a_later_run_turns_it_off(tmp_path: Path) -> None:
    root = tmp_path / "root"
    seed_os_tree(root)
    systemctl, _ = fake_systemctl(tmp_path / "bin")
    wheel = build_fake_wheel(tmp_path / "wheels", "1.0.0")
    dev = run_install(root, wheel, systemctl, "--dev-allow-unsigned-firmware")
    assert dev.returncode == 0, dev.stderr
    assert "DEVELOPMENT INSTALL: UNSIGNED FIRMWARE ALLOWED" in dev.stdout and "DEVELOPMENT INSTALL" in dev.stderr
    marker = root / "etc/station/firmware-allow-unsigned"
    assert marker.is_file()
    plain = run_install(root, wheel, systemctl)
    assert plain.returncode == 0 and not marker.exists() and "DEVELOPMENT" not in plain.stdout
