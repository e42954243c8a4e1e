"""Remote update from the CSMS (UpdateFirmware, FirmwareStatusNotification) in both versions.

Real components: the dev CSMS on 127.0.0.1, a real HTTP server serving the artefact, real
SQLite; the hand-over is the real `station.field.update.request_update` (request.json in the state
dir) and the outcome the real `result.json` the update flow leaves.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from station.field import update
from station.devtools.csms import DevCsms, Received
from station.trust.firmware import FirmwareRequest, FirmwareUpdater
from tests.firmware_helpers import ARTEFACT, WHEEL, ArtefactServer, artefact_server, make_signer, sha256
from tests.ocpp_helpers import Rig, eventually
from tests.pki_helpers import make_ca, make_firmware_signer

MANUFACTURER = make_ca("Orge manufacturer root (test)", days=30)
SIGNER = make_firmware_signer(root=MANUFACTURER)
"""The manufacturer's firmware signing certificate; its root is installed in every rig's updater."""


@pytest.fixture
def http() -> Iterator[ArtefactServer]:
    with artefact_server() as server:
        server.files[f"/releases/{WHEEL}"] = (200, ARTEFACT)
        yield server


def updater(state: Path, **kwargs: Any) -> FirmwareUpdater:
    """A development rig's updater: the test manufacturer root trusted, plain 1.6 UpdateFirmware allowed."""
    settings: dict[str, Any] = {"manufacturer_roots": lambda: SIGNER.root_pem, "allow_unsigned": True, **kwargs}
    return FirmwareUpdater(state, poll_seconds=0.05, default_retry_interval_s=0, **settings)


async def started_rig(version: str, csms: DevCsms, tmp_path: Path, **kwargs: Any) -> Rig:
    rig = Rig(version, csms, tmp_path / "station.db")
    rig.firmware = updater(tmp_path / "state", **kwargs)
    mark = csms.mark()
    await rig.start()
    await csms.wait_for("StatusNotification", since=mark, timeout=10)
    return rig


@pytest.fixture(params=["201", "16"])
async def rig(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    async with DevCsms(heartbeat_interval=300) as csms:
        rig = await started_rig(request.param, csms, tmp_path)
        yield rig
        await rig.stop()


@pytest.fixture
async def rig201(tmp_path: Path) -> AsyncIterator[Rig]:
    async with DevCsms(heartbeat_interval=300) as csms:
        rig = await started_rig("201", csms, tmp_path)
        yield rig
        await rig.stop()


def now_text(delta_s: float = 0) -> str:
    return (datetime.now(UTC) + timedelta(seconds=delta_s)).isoformat(timespec="seconds").replace("+00:00", "Z")


async def update_firmware(rig: Rig, location: str, *, request_id: int = 42, retrieve_in: float = 0, **extra: Any) -> dict[str, Any]:
    """UpdateFirmware in the rig's version; `extra` holds 2.0.1 firmware fields (signature...) and retries.

    2.0.1 requests are signed by the test manufacturer unless `extra` says otherwise."""
    retries = {k: extra.pop(k) for k in ("retries", "retryInterval") if k in extra}
    if rig.version == "201":
        signature = {"signingCertificate": SIGNER.certificate_pem, "signature": SIGNER.sign(ARTEFACT)}
        firmware = {"location": location, "retrieveDateTime": now_text(retrieve_in), **signature, **extra}
        firmware = {k: v for k, v in firmware.items() if v is not None}
        return await rig.csms.call("CP", "UpdateFirmware", {"requestId": request_id, "firmware": firmware, **retries})
    return await rig.csms.call("CP", "UpdateFirmware", {"location": location, "retrieveDate": now_text(retrieve_in), **retries})


def statuses(rig: Rig, since: int = 0) -> list[str]:
    return [r.payload["status"] for r in rig.csms.received[since:]
            if r.kind == "call" and r.action == "FirmwareStatusNotification" and r.station_id == "CP"]


async def final_status(rig: Rig, *wanted: str, since: int = 0) -> Received:
    return await rig.csms.wait_for("FirmwareStatusNotification", predicate=lambda r: r.payload["status"] in wanted,
                                   since=since, timeout=10)


def request_file(tmp_path: Path) -> Path:
    return tmp_path / "state" / "update" / "request.json"


# ------------------------------------------------------------------------------- happy paths
async def test_update_firmware_downloads_verifies_and_hands_the_artefact_to_the_update_flow(
        rig: Rig, http: ArtefactServer, tmp_path: Path) -> None:
    location = http.url(f"/releases/{WHEEL}") + f"#sha256={sha256(ARTEFACT)}"
    answer = await update_firmware(rig, location)
    assert answer == ({"status": "Accepted"} if rig.version == "201" else {})
    installing = await final_status(rig, "Installing", "InstallationFailed", "InstallVerificationFailed", "DownloadFailed")
    assert installing.payload["status"] == "Installing"
    signed = ["SignatureVerified"] if rig.version == "201" else []
    assert statuses(rig) == ["Downloading", "Downloaded", *signed, "Installing"]
    if rig.version == "201":
        assert {r.payload.get("requestId") for r in rig.calls("FirmwareStatusNotification")} == {42}
    request = json.loads(request_file(tmp_path).read_text())
    assert request["version"] == "9.9.0"
    assert Path(request["artefact"]).name == WHEEL and Path(request["artefact"]).read_bytes() == ARTEFACT
    assert http.hits == {f"/releases/{WHEEL}": 1}  # the fragment is never sent, no sidecar needed


async def test_checksum_from_a_sidecar_file_beside_the_artefact_is_accepted(
        rig201: Rig, http: ArtefactServer, tmp_path: Path) -> None:
    http.files[f"/releases/{WHEEL}.sha256"] = (200, f"{sha256(ARTEFACT)}  {WHEEL}\n".encode())
    await update_firmware(rig201, http.url(f"/releases/{WHEEL}"))
    assert (await final_status(rig201, "Installing", "InstallVerificationFailed")).payload["status"] == "Installing"
    assert request_file(tmp_path).exists()


async def test_signed_update_reports_signature_verified_before_installing(
        rig201: Rig, http: ArtefactServer, tmp_path: Path) -> None:
    location = http.url(f"/releases/{WHEEL}") + f"#sha256={sha256(ARTEFACT)}"
    answer = await update_firmware(rig201, location)
    assert answer["status"] == "Accepted"
    await final_status(rig201, "Installing", "InvalidSignature")
    assert statuses(rig201) == ["Downloading", "Downloaded", "SignatureVerified", "Installing"]
    assert request_file(tmp_path).exists()


async def test_download_waits_for_the_retrieve_time_as_download_scheduled(rig201: Rig, http: ArtefactServer) -> None:
    location = http.url(f"/releases/{WHEEL}") + f"#sha256={sha256(ARTEFACT)}"
    await update_firmware(rig201, location, retrieve_in=3)
    await final_status(rig201, "DownloadScheduled")
    assert http.hits == {}
    await final_status(rig201, "Installing")
    assert statuses(rig201) == ["DownloadScheduled", "Downloading", "Downloaded", "SignatureVerified", "Installing"]


# ------------------------------------------------------------------------------- failures
async def test_wrong_checksum_fails_verification_and_requests_no_install(
        rig: Rig, http: ArtefactServer, tmp_path: Path) -> None:
    await update_firmware(rig, http.url(f"/releases/{WHEEL}") + "#sha256=" + "0" * 64)
    failed = "InstallVerificationFailed" if rig.version == "201" else "InstallationFailed"
    await final_status(rig, failed, "Installing")
    assert statuses(rig) == ["Downloading", "Downloaded", failed]
    assert not request_file(tmp_path).exists()
    assert not (tmp_path / "state" / "firmware" / WHEEL).exists()


async def test_unsigned_artefact_without_any_checksum_is_not_installed(http: ArtefactServer, tmp_path: Path) -> None:
    async with DevCsms(heartbeat_interval=300) as csms:
        rig = await started_rig("16", csms, tmp_path)
        try:
            await update_firmware(rig, http.url(f"/releases/{WHEEL}"))
            await final_status(rig, "InstallationFailed", "Installing")
            assert not request_file(tmp_path).exists()
        finally:
            await rig.stop()


async def test_a_signed_artefact_needs_no_checksum(rig201: Rig, http: ArtefactServer, tmp_path: Path) -> None:
    await update_firmware(rig201, http.url(f"/releases/{WHEEL}"))  # the signature covers the artefact itself
    await final_status(rig201, "Installing", "InstallVerificationFailed", "InvalidSignature")
    assert statuses(rig201) == ["Downloading", "Downloaded", "SignatureVerified", "Installing"]
    assert request_file(tmp_path).exists()


async def test_bad_signature_is_reported_as_invalid_signature(rig201: Rig, http: ArtefactServer, tmp_path: Path) -> None:
    stranger = make_firmware_signer()
    location = http.url(f"/releases/{WHEEL}") + f"#sha256={sha256(ARTEFACT)}"
    await update_firmware(rig201, location, signature=stranger.sign(ARTEFACT))
    await final_status(rig201, "InvalidSignature", "Installing")
    assert statuses(rig201) == ["Downloading", "Downloaded", "InvalidSignature"]
    assert not request_file(tmp_path).exists()


@pytest.mark.parametrize("version", ["201", "16"])
async def test_tampered_firmware_is_refused_with_a_security_event_and_nothing_installed(
        version: str, http: ArtefactServer, tmp_path: Path) -> None:
    http.files[f"/releases/{WHEEL}"] = (200, ARTEFACT + b"\x00 one byte more")  # signed was ARTEFACT
    async with DevCsms(heartbeat_interval=300) as csms:
        rig = await started_rig(version, csms, tmp_path)
        try:
            firmware = {"location": http.url(f"/releases/{WHEEL}"), "retrieveDateTime": now_text(),
                        "signingCertificate": SIGNER.certificate_pem, "signature": SIGNER.sign(ARTEFACT)}
            action = "UpdateFirmware" if version == "201" else "SignedUpdateFirmware"
            answer = await csms.call("CP", action, {"requestId": 3, "firmware": firmware})
            assert answer == {"status": "Accepted"}
            notification = "FirmwareStatusNotification" if version == "201" else "SignedFirmwareStatusNotification"
            failed = await csms.wait_for(notification, predicate=lambda r: r.payload["status"] == "InvalidSignature", timeout=10)
            assert failed.payload["requestId"] == 3
            event = await csms.wait_for("SecurityEventNotification", timeout=10)
            assert event.payload["type"] == "InvalidFirmwareSignature"
            assert not request_file(tmp_path).exists()
            assert not (tmp_path / "state" / "firmware" / WHEEL).exists()
        finally:
            await rig.stop()


async def test_signed_update_in_16_reports_with_signed_firmware_status_notifications(
        http: ArtefactServer, tmp_path: Path) -> None:
    async with DevCsms(heartbeat_interval=300) as csms:
        rig = await started_rig("16", csms, tmp_path)
        try:
            firmware = {"location": http.url(f"/releases/{WHEEL}"), "retrieveDateTime": now_text(),
                        "signingCertificate": SIGNER.certificate_pem, "signature": SIGNER.sign(ARTEFACT)}
            assert await csms.call("CP", "SignedUpdateFirmware", {"requestId": 8, "firmware": firmware}) == {"status": "Accepted"}
            await csms.wait_for("SignedFirmwareStatusNotification", predicate=lambda r: r.payload["status"] == "Installing", timeout=10)
            sent = [(r.payload["status"], r.payload.get("requestId")) for r in csms.calls("SignedFirmwareStatusNotification")]
            assert sent == [("Downloading", 8), ("Downloaded", 8), ("SignatureVerified", 8), ("Installing", 8)]
            assert csms.calls("FirmwareStatusNotification") == []
            assert request_file(tmp_path).exists()
        finally:
            await rig.stop()


async def test_a_signing_certificate_from_an_unknown_manufacturer_is_refused(rig: Rig, http: ArtefactServer) -> None:
    stranger = make_signer()  # self-signed: chains to no installed ManufacturerRootCertificate
    firmware = {"location": http.url(f"/releases/{WHEEL}"), "retrieveDateTime": now_text(),
                "signingCertificate": stranger.certificate_pem, "signature": stranger.sign(ARTEFACT)}
    action = "UpdateFirmware" if rig.version == "201" else "SignedUpdateFirmware"
    answer = await rig.csms.call("CP", action, {"requestId": 4, "firmware": firmware})
    assert answer["status"] == "InvalidCertificate"
    event = await rig.csms.wait_for("SecurityEventNotification", timeout=10)
    assert event.payload["type"] == "InvalidFirmwareSigningCertificate"
    assert http.hits == {}


@pytest.mark.parametrize("flaw", ["ca-false-issuer", "no-code-signing"])
async def test_the_daemon_applies_the_root_sides_rules_to_the_signing_certificate(
        rig201: Rig, http: ArtefactServer, flaw: str) -> None:
    signer = make_firmware_signer(flaw=flaw, root=MANUFACTURER)
    answer = await update_firmware(rig201, http.url(f"/releases/{WHEEL}"), signingCertificate=signer.certificate_pem,
                                   signature=signer.sign(ARTEFACT))
    assert answer["status"] == "InvalidCertificate"
    event = await rig201.csms.wait_for("SecurityEventNotification", timeout=10)
    assert event.payload["type"] == "InvalidFirmwareSigningCertificate"
    assert http.hits == {}


async def test_an_unsigned_update_is_refused_in_201(rig201: Rig, http: ArtefactServer) -> None:
    answer = await update_firmware(rig201, http.url(f"/releases/{WHEEL}") + f"#sha256={sha256(ARTEFACT)}",
                                   signingCertificate=None, signature=None)
    assert answer["status"] == "InvalidCertificate"
    assert http.hits == {}


async def test_plain_update_firmware_in_16_is_not_supported_unless_the_station_allows_it(
        http: ArtefactServer, tmp_path: Path) -> None:
    from station.ocpp.rpc import CallErrorReceived

    async with DevCsms(heartbeat_interval=300) as csms:
        rig = await started_rig("16", csms, tmp_path, allow_unsigned=False)  # a device's default
        try:
            with pytest.raises(CallErrorReceived) as refused:
                await update_firmware(rig, http.url(f"/releases/{WHEEL}") + f"#sha256={sha256(ARTEFACT)}")
            assert refused.value.code == "NotSupported"  # whitepaper L01.FR.20
            await asyncio.sleep(0.2)
            assert http.hits == {} and not request_file(tmp_path).exists()
        finally:
            await rig.stop()


async def test_expired_signing_certificate_is_refused_with_a_security_event(rig201: Rig, http: ArtefactServer) -> None:
    signer = make_firmware_signer(expired=True)
    answer = await update_firmware(rig201, http.url(f"/releases/{WHEEL}"), signingCertificate=signer.certificate_pem,
                                   signature=signer.sign(ARTEFACT))
    assert answer["status"] == "InvalidCertificate"
    event = await rig201.csms.wait_for("SecurityEventNotification", timeout=10)
    assert event.payload["type"] == "InvalidFirmwareSigningCertificate"
    assert http.hits == {}


async def test_unreachable_url_reports_download_failed_after_the_retries(rig: Rig, tmp_path: Path) -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    await update_firmware(rig, f"http://user:s3cret@127.0.0.1:{port}/releases/{WHEEL}#sha256={sha256(ARTEFACT)}",
                          retries=2, retryInterval=0)
    await final_status(rig, "DownloadFailed", "Downloaded")
    assert statuses(rig) == ["Downloading", "DownloadFailed"]
    assert rig.firmware is not None and rig.firmware.attempts == 2
    assert not request_file(tmp_path).exists()


async def test_server_errors_are_retried_as_often_as_the_csms_asked(rig201: Rig, http: ArtefactServer) -> None:
    http.files[f"/releases/{WHEEL}"] = (503, b"busy")
    await update_firmware(rig201, http.url(f"/releases/{WHEEL}") + f"#sha256={sha256(ARTEFACT)}", retries=3, retryInterval=0)
    await final_status(rig201, "DownloadFailed", "Downloaded")
    assert http.hits == {f"/releases/{WHEEL}": 3}


async def test_artefact_above_the_size_limit_is_not_downloaded(tmp_path: Path, http: ArtefactServer) -> None:
    async with DevCsms(heartbeat_interval=300) as csms:
        rig = await started_rig("201", csms, tmp_path, max_bytes=len(ARTEFACT) - 1)
        try:
            await update_firmware(rig, http.url(f"/releases/{WHEEL}") + f"#sha256={sha256(ARTEFACT)}", retries=3)
            await final_status(rig, "DownloadFailed", "Downloaded")
            assert http.hits == {f"/releases/{WHEEL}": 1}  # not retried: it will not shrink
            assert not request_file(tmp_path).exists()
        finally:
            await rig.stop()


async def test_a_file_that_is_not_a_release_of_this_project_is_refused(rig201: Rig, http: ArtefactServer, tmp_path: Path) -> None:
    http.files["/releases/requests-2.0.0-py3-none-any.whl"] = (200, ARTEFACT)
    await update_firmware(rig201, http.url("/releases/requests-2.0.0-py3-none-any.whl") + f"#sha256={sha256(ARTEFACT)}")
    await final_status(rig201, "InstallVerificationFailed")
    assert http.hits == {}
    assert not request_file(tmp_path).exists()


async def test_an_sdist_is_refused_before_it_is_downloaded(rig201: Rig, http: ArtefactServer, tmp_path: Path) -> None:
    """The root side installs wheels only (an sdist's build code would run as root): no point fetching one."""
    http.files["/releases/ocpp_station-9.9.0.tar.gz"] = (200, ARTEFACT)
    await update_firmware(rig201, http.url("/releases/ocpp_station-9.9.0.tar.gz") + f"#sha256={sha256(ARTEFACT)}")
    refused = await final_status(rig201, "InstallVerificationFailed")
    assert refused.payload["requestId"] == 42
    assert http.hits == {} and not request_file(tmp_path).exists()


# ------------------------------------------------------------------------------- concurrency
async def test_a_second_request_cancels_a_scheduled_one_and_is_accepted_canceled(rig201: Rig, http: ArtefactServer) -> None:
    location = http.url(f"/releases/{WHEEL}") + f"#sha256={sha256(ARTEFACT)}"
    assert (await update_firmware(rig201, location, request_id=1, retrieve_in=3600))["status"] == "Accepted"
    await final_status(rig201, "DownloadScheduled")
    assert (await update_firmware(rig201, location, request_id=2))["status"] == "AcceptedCanceled"
    installing = await final_status(rig201, "Installing")
    assert installing.payload["requestId"] == 2


async def test_only_the_newest_of_several_quick_requests_is_carried_out(rig201: Rig, http: ArtefactServer) -> None:
    location = http.url(f"/releases/{WHEEL}") + f"#sha256={sha256(ARTEFACT)}"
    answers = [(await update_firmware(rig201, location, request_id=n, retrieve_in=3600 if n < 3 else 0))["status"] for n in (1, 2, 3)]
    assert answers == ["Accepted", "AcceptedCanceled", "AcceptedCanceled"]
    installing = await final_status(rig201, "Installing")
    assert installing.payload["requestId"] == 3
    assert [r.payload["requestId"] for r in rig201.calls("FirmwareStatusNotification") if r.payload["status"] == "Installing"] == [3]


async def test_a_request_while_an_update_is_installing_is_rejected(rig: Rig, http: ArtefactServer, tmp_path: Path) -> None:
    location = http.url(f"/releases/{WHEEL}") + f"#sha256={sha256(ARTEFACT)}"
    await update_firmware(rig, location, request_id=1)
    await final_status(rig, "Installing")
    request_before = request_file(tmp_path).read_text()
    mark = rig.csms.mark()
    answer = await update_firmware(rig, location, request_id=2)
    if rig.version == "201":
        assert answer["status"] == "Rejected"
    assert rig.firmware is not None and rig.firmware.last_answer == "Rejected"
    assert request_file(tmp_path).read_text() == request_before
    assert statuses(rig, mark) == []


# ------------------------------------------------------------------------------- after the restart
def leave_result(state: Path, *, ok: bool, request_id: int | None = 42) -> None:
    """What the update flow leaves: our hand-over marker from before the restart, then result.json."""
    (state / "firmware").mkdir(parents=True, exist_ok=True)
    (state / "firmware" / "installing.json").write_text(json.dumps(
        {"request_id": request_id, "version": "9.9.0", "artefact": str(state / "firmware" / WHEEL)}))
    (state / "update").mkdir(parents=True, exist_ok=True)
    result = (update.Result(True, "updated", "9.9.0", "0.1.0", "9.9.0 healthy") if ok else
              update.Result(False, "rolled-back", "0.1.0", "9.9.0", "9.9.0 failed the smoke test (exit 3) after 4 attempt(s); rolled back to 0.1.0"))
    (state / "update" / "result.json").write_text(json.dumps(result.to_json()))


@pytest.mark.parametrize("version", ["201", "16"])
async def test_after_the_restart_installed_is_reported_exactly_once(tmp_path: Path, version: str) -> None:
    leave_result(tmp_path / "state", ok=True, request_id=42 if version == "201" else None)  # 1.6 UpdateFirmware has no id
    async with DevCsms(heartbeat_interval=300) as csms:
        rig = await started_rig(version, csms, tmp_path)
        installed = await final_status(rig, "Installed")
        if version == "201":
            assert installed.payload["requestId"] == 42
        await eventually(lambda: update.read_result(state_dir=tmp_path / "state") is None)
        assert not (tmp_path / "state" / "firmware" / "installing.json").exists()
        await rig.stop()
        rig = await started_rig(version, csms, tmp_path)
        answer = await csms.call("CP", "TriggerMessage", {"requestedMessage": "FirmwareStatusNotification"})
        assert answer["status"] == "Accepted"
        await final_status(rig, "Idle")
        await rig.stop()
    assert statuses(rig) == ["Installed", "Idle"]


async def test_after_a_rollback_installation_failed_is_reported(tmp_path: Path) -> None:
    leave_result(tmp_path / "state", ok=False)
    async with DevCsms(heartbeat_interval=300) as csms:
        rig = await started_rig("201", csms, tmp_path)
        failed = await final_status(rig, "InstallationFailed", "Installed")
        assert failed.payload == {"status": "InstallationFailed", "requestId": 42}
        await eventually(lambda: update.read_result(state_dir=tmp_path / "state") is None)
        await rig.stop()


def leave_refusal(state: Path, refused: str, detail: str) -> None:
    """What the root side leaves when it refuses the hand-over (station.field.update.run_request)."""
    leave_result(state, ok=True)
    result = update.Result(False, "failed", "0.1.0", "0.1.0", f"request refused: {detail}", refused=refused)
    (state / "update" / "result.json").write_text(json.dumps(result.to_json()))


async def test_a_signature_the_root_side_refused_is_reported_as_invalid_signature_with_a_security_event(
        tmp_path: Path) -> None:
    leave_refusal(tmp_path / "state", "signature", "no manufacturer root provisioned by root")
    async with DevCsms(heartbeat_interval=300) as csms:
        rig = await started_rig("201", csms, tmp_path)
        refused = await final_status(rig, "InvalidSignature", "Installed", "InstallationFailed")
        assert refused.payload == {"status": "InvalidSignature", "requestId": 42}
        event = await csms.wait_for("SecurityEventNotification", timeout=10)
        assert event.payload["type"] == "InvalidFirmwareSignature"
        await eventually(lambda: update.read_result(state_dir=tmp_path / "state") is None)
        await rig.stop()
    assert [r.payload["type"] for r in csms.calls("SecurityEventNotification")] == ["InvalidFirmwareSignature"]


async def test_an_artefact_the_root_side_could_not_verify_is_reported_as_install_verification_failed(
        tmp_path: Path) -> None:
    leave_refusal(tmp_path / "state", "verification", "the request names version 0.9.0 but the signed artefact is version 2.0.0")
    async with DevCsms(heartbeat_interval=300) as csms:
        rig = await started_rig("201", csms, tmp_path)
        failed = await final_status(rig, "InstallVerificationFailed", "Installed", "InstallationFailed")
        assert failed.payload == {"status": "InstallVerificationFailed", "requestId": 42}
        await rig.stop()


async def test_a_result_written_after_the_start_is_reported_when_it_appears(tmp_path: Path) -> None:
    """The update flow writes result.json only after the new release passed its smoke test."""
    state = tmp_path / "state"
    leave_result(state, ok=True)
    (state / "update" / "result.json").rename(state / "later.json")
    async with DevCsms(heartbeat_interval=300) as csms:
        rig = await started_rig("201", csms, tmp_path)
        answer = await csms.call("CP", "TriggerMessage", {"requestedMessage": "FirmwareStatusNotification"})
        assert answer["status"] == "Accepted"
        installing = await final_status(rig, "Installing")
        assert installing.payload["requestId"] == 42
        (state / "later.json").rename(state / "update" / "result.json")
        await final_status(rig, "Installed")
        await rig.stop()


async def test_an_update_interrupted_by_a_restart_is_carried_on(tmp_path: Path, http: ArtefactServer) -> None:
    location = http.url(f"/releases/{WHEEL}", userinfo="fleet:pw") + f"#sha256={sha256(ARTEFACT)}"
    async with DevCsms(heartbeat_interval=300) as csms:
        rig = await started_rig("201", csms, tmp_path)
        await update_firmware(rig, location, request_id=9, retrieve_in=2)
        await final_status(rig, "DownloadScheduled")
        await rig.stop()
        saved = tmp_path / "state" / "firmware" / "job.json"
        assert saved.stat().st_mode & 0o777 == 0o600
        rig = await started_rig("201", csms, tmp_path)
        installing = await final_status(rig, "Installing", "DownloadFailed", "InstallVerificationFailed")
        await rig.stop()
    assert installing.payload == {"status": "Installing", "requestId": 9}
    assert statuses(rig) == ["DownloadScheduled", "DownloadScheduled", "Downloading", "Downloaded", "SignatureVerified", "Installing"]
    assert request_file(tmp_path).exists() and not saved.exists()


async def test_an_accepted_request_is_saved_before_the_answer_and_carried_on_by_the_next_start(
        tmp_path: Path, http: ArtefactServer) -> None:
    location = http.url(f"/releases/{WHEEL}") + f"#sha256={sha256(ARTEFACT)}"
    answered = updater(tmp_path / "state")
    answer = await answered.start(FirmwareRequest(
        location=location, retrieve_at=datetime.now(UTC), request_id=12,
        signing_certificate=SIGNER.certificate_pem, signature=SIGNER.sign(ARTEFACT)))
    assert answer.status == "Accepted"
    # the answer leaves here; the power goes before the work begins (no launch)
    async with DevCsms(heartbeat_interval=300) as csms:
        rig = await started_rig("201", csms, tmp_path)
        installing = await final_status(rig, "Installing", "DownloadFailed", "InstallVerificationFailed")
        await rig.stop()
    assert installing.payload == {"status": "Installing", "requestId": 12}
    assert request_file(tmp_path).exists()


# ------------------------------------------------------------------------------- TriggerMessage
async def test_trigger_firmware_status_reports_idle_when_nothing_is_in_progress(rig: Rig) -> None:
    mark = rig.csms.mark()
    answer = await rig.csms.call("CP", "TriggerMessage", {"requestedMessage": "FirmwareStatusNotification"})
    assert answer["status"] == "Accepted"
    sent = await final_status(rig, "Idle", since=mark)
    assert sent.payload == {"status": "Idle"}


async def test_trigger_firmware_status_reports_the_update_in_progress(rig: Rig, http: ArtefactServer) -> None:
    await update_firmware(rig, http.url(f"/releases/{WHEEL}") + f"#sha256={sha256(ARTEFACT)}", request_id=7, retrieve_in=3600)
    assert rig.firmware is not None
    await eventually(lambda: rig.firmware is not None and rig.firmware.busy)
    mark = rig.csms.mark()
    await rig.csms.call("CP", "TriggerMessage", {"requestedMessage": "FirmwareStatusNotification"})
    sent = await rig.csms.wait_for("FirmwareStatusNotification", since=mark, timeout=10)
    if rig.version == "201":
        assert sent.payload == {"status": "DownloadScheduled", "requestId": 7}
    else:
        assert sent.payload == {"status": "Idle"}  # 1.6 has no word for "scheduled": nothing runs yet


async def test_trigger_transaction_event_sends_an_updated_event_through_the_outbox(rig201: Rig) -> None:
    rig = rig201
    assert rig.core is not None and rig.esp is not None
    answer = await rig.csms.call("CP", "TriggerMessage", {"requestedMessage": "TransactionEvent", "evse": {"id": 1}})
    assert answer["status"] == "Rejected"
    await rig.csms.call("CP", "RequestStartTransaction", {"idToken": {"idToken": "T1", "type": "ISO14443"}, "remoteStartId": 1, "evseId": 1})
    rig.esp.plug()
    await rig.csms.wait_for("TransactionEvent", predicate=lambda r: r.payload["eventType"] == "Started", timeout=10)
    answer = await rig.csms.call("CP", "TriggerMessage", {"requestedMessage": "TransactionEvent", "evse": {"id": 1}})
    assert answer["status"] == "Accepted"
    triggered = await rig.csms.wait_for("TransactionEvent", predicate=lambda r: r.payload["triggerReason"] == "Trigger", timeout=10)
    assert triggered.payload["eventType"] == "Updated"
    await rig.csms.call("CP", "TriggerMessage", {"requestedMessage": "TransactionEvent"})  # every evse
    await rig.wait_outbox_empty()
    events = rig.calls("TransactionEvent")
    assert [e.payload["triggerReason"] for e in events].count("Trigger") == 2
    assert [e.payload["seqNo"] for e in events] == list(range(len(events)))
    assert len({e.payload["transactionInfo"]["transactionId"] for e in events}) == 1
