"""station-update: pinned releases side by side, switch, smoke test, automatic rollback."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from station.field import update
from tests.pki_helpers import make_firmware_signer
from tests.provisioning_support import build_fake_wheel, calls, fake_systemctl, make_release, pip_command

FAST = {"grace_seconds": 0.5, "interval": 0.05}


@pytest.fixture
def device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A device tree with release 1.0.0 current and healthy, systemctl stubbed."""
    systemctl, log = fake_systemctl(tmp_path / "bin")
    monkeypatch.setenv("SYSTEMCTL", str(systemctl))
    monkeypatch.setenv("STATION_PIP", pip_command())
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.delenv("STATION_SMOKE_CMD", raising=False)
    monkeypatch.delenv("FAKE_BROKEN_VERSIONS", raising=False)
    root = tmp_path / "root"
    wheels = tmp_path / "wheels"
    make_release(root, "1.0.0")
    update.switch("1.0.0", root=root)
    return {"root": root, "wheels": wheels, "log": log}


def current(root: Path) -> str | None:
    layout = update.Layout(root)
    return layout.version_of(layout.current)


def history(root: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in update.Layout(root).history.read_text().splitlines()]


def test_install_release_creates_a_venv_beside_the_current_release(device: dict[str, Path]) -> None:
    root = device["root"]
    target = update.install_release(build_fake_wheel(device["wheels"], "1.1.0"), "1.1.0", root=root)
    assert target == root / "opt/station/releases/1.1.0"
    assert (target / "venv/bin/station").exists() and (target / ".complete").exists()
    assert current(root) == "1.0.0"
    assert os.readlink(root / "opt/station/current") == "releases/1.0.0"


def test_install_release_rejects_an_artefact_without_the_station_command(device: dict[str, Path]) -> None:
    with pytest.raises(update.UpdateError, match="failed"):
        update.install_release(device["wheels"] / "missing.whl", "1.2.0", root=device["root"])
    assert not (device["root"] / "opt/station/releases/1.2.0").exists()


def test_healthy_update_switches_current_restarts_units_and_keeps_previous(device: dict[str, Path]) -> None:
    root = device["root"]
    result = update.update("1.1.0", build_fake_wheel(device["wheels"], "1.1.0"), root=root, **FAST)
    assert result.ok and result.action == "updated"
    assert current(root) == "1.1.0"
    assert os.readlink(root / "opt/station/previous") == "releases/1.0.0"
    assert calls(device["log"]) == ["restart station.service station-api.service"]
    assert history(root)[-1]["action"] == "updated"


def test_failing_smoke_test_rolls_back_automatically_and_records_why(
    device: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = device["root"]
    monkeypatch.setenv("FAKE_BROKEN_VERSIONS", "2.0.0")
    result = update.update("2.0.0", build_fake_wheel(device["wheels"], "2.0.0"), root=root, **FAST)
    assert not result.ok and result.action == "rolled-back"
    assert current(root) == "1.0.0"
    assert os.readlink(root / "opt/station/previous") == "releases/2.0.0"
    assert calls(device["log"]) == ["restart station.service station-api.service"] * 2
    record = history(root)[-1]
    assert record["action"] == "rolled-back" and record["previous"] == "2.0.0"
    assert "exit 3" in str(record["detail"]) and record["attempts"] >= 2


def test_manual_rollback_returns_to_the_previous_release(device: dict[str, Path]) -> None:
    root = device["root"]
    make_release(root, "1.1.0")
    update.switch_and_verify("1.1.0", root=root, **FAST)
    result = update.rollback(root=root, **FAST)
    assert result.ok and result.action == "rollback"
    assert current(root) == "1.0.0"


def test_guarded_rollback_is_a_noop_when_that_version_is_not_current(device: dict[str, Path]) -> None:
    result = update.rollback(root=device["root"], only_from="9.9.9", **FAST)
    assert result.ok and result.action == "unchanged"
    assert current(device["root"]) == "1.0.0"
    assert calls(device["log"]) == []


def test_prune_keeps_current_previous_and_the_newest(device: dict[str, Path]) -> None:
    root = device["root"]
    for version in ("1.1.0", "1.2.0", "1.3.0"):
        make_release(root, version)
        assert update.switch_and_verify(version, root=root, **FAST).ok
    assert update.Layout(root).installed() == ["1.1.0", "1.2.0", "1.3.0"]
    assert current(root) == "1.3.0"


def test_daemon_request_is_carried_out_and_leaves_a_result(
    device: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = device["root"]
    monkeypatch.setenv("FAKE_BROKEN_VERSIONS", "3.0.0")
    signer = make_firmware_signer()
    (root / "etc/station/firmware-roots").mkdir(parents=True)
    (root / "etc/station/firmware-roots/manufacturer.pem").write_text(signer.root_pem)  # install.sh --firmware-root
    state = root / "var/lib/station"
    wheel = build_fake_wheel(state / "firmware", "3.0.0")
    request = update.request_update(wheel, "3.0.0", sha256=hashlib.sha256(wheel.read_bytes()).hexdigest(), state_dir=state,
                                    signing_certificate=signer.certificate_pem, signature=signer.sign(wheel.read_bytes()))
    result = update.run_request(request, root=root, **FAST)
    assert result.action == "rolled-back"
    assert not request.exists()
    outcome = update.read_result(state_dir=state)
    assert outcome is not None and outcome["action"] == "rolled-back" and outcome["previous"] == "3.0.0"


def test_cli_exit_code_1_on_rollback_and_stub_smoke_override(device: dict[str, Path]) -> None:
    root = device["root"]
    wheel = build_fake_wheel(device["wheels"], "1.5.0")
    # Authentication fails while 1.5.0 is current; the old release passes again.
    smoke = f"sh -c 'readlink {root}/opt/station/current | grep -q 1.0.0 || exit 4'"
    env = dict(os.environ, STATION_SMOKE_CMD=smoke)
    proc = subprocess.run(
        [sys.executable, "-m", "station.field.update", "1.5.0", "--artefact", str(wheel), "--root", str(root),
         "--grace", "5", "--interval", "0.05"],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert proc.returncode == 1, proc.stderr
    out = json.loads(proc.stdout)
    assert out["action"] == "rolled-back" and out["attempts"] == 1  # auth failure: no waiting
    assert current(root) == "1.0.0"


def test_a_version_below_the_current_one_is_refused_without_allow_downgrade(device: dict[str, Path]) -> None:
    root = device["root"]
    make_release(root, "0.9.0")
    result = update.update("0.9.0", "", root=root, **FAST)
    assert not result.ok and result.refused == "downgrade" and "--allow-downgrade" in result.detail
    assert current(root) == "1.0.0" and calls(device["log"]) == []


def test_cli_allow_downgrade_switches_to_an_older_release(device: dict[str, Path]) -> None:
    root = device["root"]
    make_release(root, "0.9.0")
    cli = [sys.executable, "-m", "station.field.update", "0.9.0", "--root", str(root), "--grace", "5", "--interval", "0.05"]
    refused = subprocess.run(cli, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and json.loads(refused.stdout)["refused"] == "downgrade"
    allowed = subprocess.run([*cli, "--allow-downgrade"], capture_output=True, text=True, timeout=60)
    assert allowed.returncode == 0, allowed.stderr
    assert current(root) == "0.9.0"
