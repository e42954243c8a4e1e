"""End to end: a remote update through the real `station run` process, the ESP32 simulator on a
pty, the dev CSMS and a real HTTP server; the update flow's side is played by its files. The CSMS
first installs the manufacturer's root, which the firmware signing certificate must chain to."""

from __future__ import annotations

import json
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from station.field import update
from tests.e2e import STATION_ID, DaemonProcess, running_station
from tests.firmware_helpers import ARTEFACT, WHEEL, artefact_server, sha256
from tests.ocpp_helpers import eventually
from tests.pki_helpers import make_firmware_signer

SIGNER = make_firmware_signer()


async def signed_update_accepted(csms: Any, location: str, *, request_id: int) -> None:
    """Once the station is up: the CSMS installs SIGNER's root as ManufacturerRootCertificate and asks for the
    artefact at `location`, signed under it; both answered Accepted."""
    await csms.wait_for("StatusNotification", STATION_ID, timeout=20)
    installed = await csms.call(STATION_ID, "InstallCertificate", {
        "certificateType": "ManufacturerRootCertificate", "certificate": SIGNER.root_pem})
    assert installed == {"status": "Accepted"}
    answer = await csms.call(STATION_ID, "UpdateFirmware", {"requestId": request_id, "firmware": {
        "location": location, "retrieveDateTime": datetime.now(UTC).isoformat(),
        "signingCertificate": SIGNER.certificate_pem, "signature": SIGNER.sign(ARTEFACT)}})
    assert answer["status"] == "Accepted"


async def test_daemon_hands_a_signed_update_over_and_reports_installed_once_after_its_restart(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with artefact_server() as http:
        http.files[f"/releases/{WHEEL}"] = (200, ARTEFACT)
        location = http.url(f"/releases/{WHEEL}", userinfo="fleet:s3cret-Pw") + f"#sha256={sha256(ARTEFACT)}"
        async with running_station(tmp_path) as (csms, _sim, daemon):
            await signed_update_accepted(csms, location, request_id=5)
            await csms.wait_for("FirmwareStatusNotification", STATION_ID,
                                lambda r: r.payload["status"] in ("Installing", "DownloadFailed", "InstallVerificationFailed"), timeout=20)
            assert daemon.proc is not None  # the checks ran in child processes: cryptography is not in the daemon
            assert "cryptography" not in Path(f"/proc/{daemon.proc.pid}/maps").read_text()
            request = json.loads((state / "update" / "request.json").read_text())
            assert request["version"] == "9.9.0" and Path(request["artefact"]).read_bytes() == ARTEFACT
            # station-update.service (root) carries it out, restarts the daemon, and leaves result.json.
            (state / "update" / "request.json").unlink()
            result = update.Result(True, "updated", "9.9.0", "0.1.0", "9.9.0 healthy")
            (state / "update" / "result.json").write_text(json.dumps(result.to_json()))
            await daemon.stop()
            since = csms.mark()
            restarted = await DaemonProcess(daemon.env, tmp_path / "station.log").start()
            try:
                boot = await csms.wait_for("BootNotification", STATION_ID, since=since, timeout=20)
                assert boot.payload["reason"] == "FirmwareUpdate"
                installed = await csms.wait_for("FirmwareStatusNotification", STATION_ID,
                                                lambda r: r.payload["status"] == "Installed", timeout=20)
                assert installed.payload["requestId"] == 5
                await eventually(lambda: not (state / "update" / "result.json").exists(), timeout=10)
            finally:
                await restarted.stop()
            log = daemon.log()
    sent = [r.payload["status"] for r in csms.calls("FirmwareStatusNotification", STATION_ID)]
    assert sent == ["Downloading", "Downloaded", "SignatureVerified", "Installing", "Installed"]
    assert "s3cret-Pw" not in log and "fleet:" not in log
    assert not (state / "firmware" / WHEEL).exists()


async def test_firmware_signed_under_a_root_the_csms_installed_is_refused_by_the_root_side(tmp_path: Path) -> None:
    """A compromised CSMS installs its own ManufacturerRootCertificate and signs a release under it: the
    daemon's pre-check passes, the real root side (no manufacturer root provisioned by root) refuses,
    and after the restart the CSMS hears InvalidSignature and a security event."""
    state = tmp_path / "state"
    device = tmp_path / "device"  # the root side's view: installed without --firmware-root
    with artefact_server() as http:
        http.files[f"/releases/{WHEEL}"] = (200, ARTEFACT)
        async with running_station(tmp_path) as (csms, _sim, daemon):
            await signed_update_accepted(csms, http.url(f"/releases/{WHEEL}"), request_id=6)
            await csms.wait_for("FirmwareStatusNotification", STATION_ID,
                                lambda r: r.payload["status"] == "Installing", timeout=20)
            result = update.run_request(state / "update" / "request.json", root=device, grace_seconds=1, interval=0.05)
            assert not result.ok and result.refused == "signature"
            assert update.Layout(device).installed() == []
            await daemon.stop()
            since = csms.mark()
            restarted = await DaemonProcess(daemon.env, tmp_path / "station.log").start()
            try:
                refused = await csms.wait_for("FirmwareStatusNotification", STATION_ID,
                                              lambda r: r.payload["status"] == "InvalidSignature", since=since, timeout=20)
                assert refused.payload["requestId"] == 6
                event = await csms.wait_for("SecurityEventNotification", STATION_ID,
                                            lambda r: r.payload["type"] == "InvalidFirmwareSignature", since=since, timeout=20)
                assert "no manufacturer root provisioned" in event.payload.get("techInfo", "")
                await eventually(lambda: not (state / "update" / "result.json").exists(), timeout=10)
            finally:
                await restarted.stop()


async def test_an_update_answered_accepted_survives_a_kill_right_after_the_answer(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with artefact_server() as http:
        http.files[f"/releases/{WHEEL}"] = (200, ARTEFACT)
        location = http.url(f"/releases/{WHEEL}") + f"#sha256={sha256(ARTEFACT)}"
        async with running_station(tmp_path) as (csms, _sim, daemon):
            await signed_update_accepted(csms, location, request_id=6)
            await daemon.stop(signal.SIGKILL)
            since = csms.mark()
            restarted = await DaemonProcess(daemon.env, tmp_path / "station.log").start()
            try:
                installing = await csms.wait_for(
                    "FirmwareStatusNotification", STATION_ID,
                    lambda r: r.payload["status"] in ("Installing", "DownloadFailed", "InstallVerificationFailed"),
                    since=since, timeout=30)
            finally:
                await restarted.stop()
    assert installing.payload == {"status": "Installing", "requestId": 6}
    assert (state / "update" / "request.json").exists()
