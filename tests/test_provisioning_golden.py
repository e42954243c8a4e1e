"""provisioning/golden-image.sh: install, then strip every per-device identity from the master."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.provisioning_support import build_fake_wheel, fake_systemctl, offline_env, pip_command

REPO = Path(__file__).resolve().parents[1]


def test_golden_image_keeps_the_release_and_removes_identity(tmp_path: Path) -> None:
    root = tmp_path / "root"
    for path, text in {
        "etc/machine-id": "0123456789abcdef0123456789abcdef\n",
        "etc/ssh/ssh_host_ed25519_key": "KEY", "etc/ssh/ssh_host_ed25519_key.pub": "PUB",
        "etc/ssh/sshd_config": "PermitRootLogin no\n",
        "var/lib/station/store.sqlite": "data", "var/log/syslog": "old lines\n",
        "var/log/journal/abc/system.journal": "j", "root/.bash_history": "ls\n",
        "boot/firmware/station-identity.env": "OCPP_STATION_NAME='CP-1'\n",
        "etc/ocpp_station.env": "OCPP_STATION_NAME='CP-MASTER'\n",
    }.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    systemctl, _ = fake_systemctl(tmp_path / "bin")
    wheel = build_fake_wheel(tmp_path / "wheels", "1.0.0")
    result = subprocess.run(
        ["bash", str(REPO / "provisioning/golden-image.sh"), "--root", str(root), "--no-apt",
         "--artefact", str(wheel), "--pip", pip_command()],
        capture_output=True, text=True, timeout=120, env=offline_env(SYSTEMCTL=str(systemctl)),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (root / "opt/station/current/venv/bin/station").exists()
    shebang = (root / "opt/station/current/venv/bin/station").read_text().splitlines()[0]
    assert shebang == "#!/opt/station/releases/1.0.0/venv/bin/python"  # the image's path, not the tree's
    assert (root / "etc/systemd/system/station.service").exists()
    assert (root / "etc/machine-id").read_text() == ""
    assert (root / "etc/ssh/sshd_config").exists() and not list((root / "etc/ssh").glob("ssh_host_*"))
    for gone in ("etc/ocpp_station.env", "var/lib/station", "root/.bash_history",
                 "boot/firmware/station-identity.env", "var/log/journal/abc"):
        assert not (root / gone).exists(), gone
    assert (root / "var/log/syslog").read_text() == ""
    assert "master is clean" in result.stdout


def test_a_golden_image_never_allows_unsigned_firmware(tmp_path: Path) -> None:
    systemctl, _ = fake_systemctl(tmp_path / "bin")
    result = subprocess.run(
        ["bash", str(REPO / "provisioning/golden-image.sh"), "--root", str(tmp_path / "root"), "--no-apt",
         "--artefact", str(build_fake_wheel(tmp_path / "wheels", "1.0.0")), "--pip", pip_command(),
         "--dev-allow-unsigned-firmware"],
        capture_output=True, text=True, timeout=120, env=offline_env(SYSTEMCTL=str(systemctl)),
    )
    assert result.returncode == 2 and "never a fleet image" in result.stderr
    assert not (tmp_path / "root/opt/station").exists()
