"""End to end: remote logs through the real `station run` process, the ESP32 simulator on a pty,
the dev CSMS, and real upload servers on loopback (HTTP, FTP via pyftpdlib)."""

from __future__ import annotations

import io
import json
import signal
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from station.devtools.csms import DevCsms
from tests.e2e import CANARY_PASSWORD, STATION_ID, DaemonProcess, running_station
from tests.ocpp_helpers import eventually
from tests.upload_servers import ftp_upload_server, http_upload_server

CANARY_TOKEN = "canary-api-token-Hq7-long-enough"
CANARY_KEY = "canary-authkey-Lm55"
CANARY_FTP_PASSWORD = "canary-ftp-Vb02"
CANARY_DRIVER_TOKEN = "CANARYTOKEN77"


def members(archive: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        return {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def statuses(csms: DevCsms, action: str, request_id: int | None = None) -> list[str]:
    return [r.payload["status"] for r in csms.calls(action, STATION_ID)
            if request_id is None or r.payload.get("requestId") == request_id]


def final(status_set: set[str]) -> Callable[[Any], bool]:
    return lambda r: r.payload["status"] in status_set


DONE = {"Uploaded", "UploadFailure", "BadMessage", "PermissionDenied", "NotSupportedOperation"}


def get_log(location: str, request_id: int, **extra: Any) -> dict[str, Any]:
    return {"logType": "DiagnosticsLog", "requestId": request_id, "log": {"remoteLocation": location}, **extra}


def logged_station(tmp_path: Path, version: str = "201", **extra: str) -> Any:
    return running_station(tmp_path, version=version, STATION_LOG_FILE=str(tmp_path / "station-file.log"),
                           STATION_LOG_UPLOAD_ALLOW_LOCAL="true", **extra)  # the upload servers are on loopback


async def test_getlog_uploads_the_diagnostics_archive_over_http_with_log_status_notifications(tmp_path: Path) -> None:
    with http_upload_server() as http:
        async with logged_station(tmp_path) as (csms, _sim, _daemon):
            await csms.wait_for("StatusNotification", STATION_ID, timeout=20)
            answer = await csms.call(STATION_ID, "GetLog", get_log(http.url("/logs/"), 7))
            assert answer["status"] == "Accepted"
            await csms.wait_for("LogStatusNotification", STATION_ID, final(DONE), timeout=30)
    assert statuses(csms, "LogStatusNotification", 7) == ["Uploading", "Uploaded"]
    content = members(http.received[f"/logs/{answer['filename']}"])
    assert set(content) == {"manifest.json", "station.log", "config.json", "state.json", "flight-recorder.log"}
    recorder = content["flight-recorder.log"].decode()
    assert " ocpp out BootNotification " in recorder and " ocpp in BootNotification result " in recorder
    assert " esp32-1 rx " in recorder and " esp32-1 tx " in recorder
    assert b"station starting" in content["station.log"]
    assert b'"connectors"' in content["state.json"]


async def test_getlog_uploads_over_ftp_into_the_given_directory(tmp_path: Path) -> None:
    with ftp_upload_server(tmp_path / "ftp") as ftp:
        async with logged_station(tmp_path) as (csms, _sim, _daemon):
            await csms.wait_for("StatusNotification", STATION_ID, timeout=20)
            answer = await csms.call(STATION_ID, "GetLog", get_log(ftp.url("/incoming/"), 8))
            await csms.wait_for("LogStatusNotification", STATION_ID, final(DONE), timeout=30)
        files = ftp.files()
    assert statuses(csms, "LogStatusNotification", 8) == ["Uploading", "Uploaded"]
    assert "manifest.json" in members(files[f"incoming/{answer['filename']}"])


async def test_no_secret_reaches_the_archive(tmp_path: Path) -> None:
    with ftp_upload_server(tmp_path / "ftp", password=CANARY_FTP_PASSWORD) as ftp:
        async with logged_station(tmp_path, STATION_API_TOKEN=CANARY_TOKEN, OCPP_STATION_PASSWORD=CANARY_PASSWORD) as (csms, _sim, _daemon):
            await csms.wait_for("StatusNotification", STATION_ID, timeout=20)
            await csms.call(STATION_ID, "SetVariables", {"setVariableData": [{
                "component": {"name": "SecurityCtrlr"}, "variable": {"name": "BasicAuthPassword"},
                "attributeValue": CANARY_KEY}]})
            await csms.call(STATION_ID, "RequestStartTransaction", {
                "idToken": {"idToken": CANARY_DRIVER_TOKEN, "type": "ISO14443"}, "remoteStartId": 3, "evseId": 1})
            answer = await csms.call(STATION_ID, "GetLog", get_log(ftp.url("/incoming/"), 9))
            await csms.wait_for("LogStatusNotification", STATION_ID, final(DONE), timeout=30)
        data = ftp.files()[f"incoming/{answer['filename']}"]
    text = b"".join(members(data).values())
    assert b"BasicAuthPassword" in text and b"E2E_AC_001" in text  # the frames and the config are there...
    assert b"****EN77" in text  # the driver's token is in the state and the frames, masked
    for canary in (CANARY_PASSWORD, CANARY_TOKEN, CANARY_KEY, CANARY_FTP_PASSWORD, CANARY_DRIVER_TOKEN):
        assert canary.encode() not in text  # ...their secrets are not


async def test_a_failing_upload_is_retried_then_reported_as_upload_failure(tmp_path: Path) -> None:
    with http_upload_server() as http:
        http.answers["/broken/x.tar.gz"] = [503, 503, 503]
        async with logged_station(tmp_path) as (csms, _sim, _daemon):
            await csms.wait_for("StatusNotification", STATION_ID, timeout=20)
            await csms.call(STATION_ID, "GetLog", get_log(http.url("/broken/x.tar.gz"), 10, retries=2, retryInterval=0))
            await csms.wait_for("LogStatusNotification", STATION_ID, final(DONE), timeout=30)
    assert statuses(csms, "LogStatusNotification", 10) == ["Uploading", "UploadFailure"]
    assert http.hits("/broken/x.tar.gz") == 3


async def test_an_upload_that_fails_once_succeeds_on_the_retry(tmp_path: Path) -> None:
    with http_upload_server() as http:
        http.answers["/flaky/x.tar.gz"] = [500]
        async with logged_station(tmp_path) as (csms, _sim, _daemon):
            await csms.wait_for("StatusNotification", STATION_ID, timeout=20)
            await csms.call(STATION_ID, "GetLog", get_log(http.url("/flaky/x.tar.gz"), 11, retries=1, retryInterval=1))
            await csms.wait_for("LogStatusNotification", STATION_ID, final(DONE), timeout=30)
    assert statuses(csms, "LogStatusNotification", 11) == ["Uploading", "Uploaded"]
    assert "/flaky/x.tar.gz" in http.received


async def test_a_new_getlog_cancels_the_running_upload_with_accepted_canceled(tmp_path: Path) -> None:
    with http_upload_server() as http:
        http.delay_s["/slow/x.tar.gz"] = 5.0
        async with logged_station(tmp_path) as (csms, _sim, _daemon):
            await csms.wait_for("StatusNotification", STATION_ID, timeout=20)
            await csms.call(STATION_ID, "GetLog", get_log(http.url("/slow/x.tar.gz"), 12))
            await csms.wait_for("LogStatusNotification", STATION_ID, lambda r: r.payload.get("requestId") == 12, timeout=20)
            second = await csms.call(STATION_ID, "GetLog", get_log(http.url("/fast/"), 13))
            await csms.wait_for("LogStatusNotification", STATION_ID,
                                lambda r: r.payload.get("requestId") == 13 and r.payload["status"] in DONE, timeout=30)
    assert second["status"] == "AcceptedCanceled"
    assert statuses(csms, "LogStatusNotification", 12) == ["Uploading", "AcceptedCanceled"]
    assert statuses(csms, "LogStatusNotification", 13) == ["Uploading", "Uploaded"]


async def test_an_upload_refused_for_credentials_reports_permission_denied(tmp_path: Path) -> None:
    with http_upload_server() as http:
        http.credentials = "fleet:right"
        async with logged_station(tmp_path) as (csms, _sim, _daemon):
            await csms.wait_for("StatusNotification", STATION_ID, timeout=20)
            await csms.call(STATION_ID, "GetLog", get_log(http.url("/logs/", userinfo="fleet:wrong"), 14, retries=0))
            await csms.wait_for("LogStatusNotification", STATION_ID, final(DONE), timeout=30)
    assert statuses(csms, "LogStatusNotification", 14) == ["Uploading", "PermissionDenied"]


async def test_a_triggered_log_status_notification_says_idle_when_nothing_runs(tmp_path: Path) -> None:
    async with logged_station(tmp_path) as (csms, _sim, _daemon):
        await csms.wait_for("StatusNotification", STATION_ID, timeout=20)
        answer = await csms.call(STATION_ID, "TriggerMessage", {"requestedMessage": "LogStatusNotification"})
        notification = await csms.wait_for("LogStatusNotification", STATION_ID, timeout=10)
    assert answer["status"] == "Accepted"
    assert notification.payload == {"status": "Idle"}


async def test_16_getdiagnostics_uploads_over_ftp_with_diagnostics_status_notifications(tmp_path: Path) -> None:
    with ftp_upload_server(tmp_path / "ftp") as ftp:
        async with logged_station(tmp_path, version="16") as (csms, _sim, _daemon):
            await csms.wait_for("StatusNotification", STATION_ID, timeout=20)
            answer = await csms.call(STATION_ID, "GetDiagnostics", {"location": ftp.url("/incoming/")})
            await csms.wait_for("DiagnosticsStatusNotification", STATION_ID, final({"Uploaded", "UploadFailed"}), timeout=30)
        files = ftp.files()
    assert statuses(csms, "DiagnosticsStatusNotification") == ["Uploading", "Uploaded"]
    assert "flight-recorder.log" in members(files[f"incoming/{answer['fileName']}"])


async def test_16_getlog_of_the_security_whitepaper_uploads_over_http(tmp_path: Path) -> None:
    with http_upload_server() as http:
        async with logged_station(tmp_path, version="16") as (csms, _sim, _daemon):
            await csms.wait_for("StatusNotification", STATION_ID, timeout=20)
            answer = await csms.call(STATION_ID, "GetLog", get_log(http.url("/logs/"), 15))
            await csms.wait_for("LogStatusNotification", STATION_ID, final(DONE), timeout=30)
    assert answer["status"] == "Accepted"
    assert statuses(csms, "LogStatusNotification", 15) == ["Uploading", "Uploaded"]
    assert f"/logs/{answer['filename']}" in http.received


async def test_16_supported_feature_profiles_include_firmware_management(tmp_path: Path) -> None:
    async with logged_station(tmp_path, version="16") as (csms, _sim, _daemon):
        await csms.wait_for("StatusNotification", STATION_ID, timeout=20)
        answer = await csms.call(STATION_ID, "GetConfiguration", {"key": ["SupportedFeatureProfiles"]})
        triggered = await csms.call(STATION_ID, "TriggerMessage", {"requestedMessage": "DiagnosticsStatusNotification"})
        idle = await csms.wait_for("DiagnosticsStatusNotification", STATION_ID, timeout=10)
    assert "FirmwareManagement" in answer["configurationKey"][0]["value"].split(",")
    assert triggered["status"] == "Accepted" and idle.payload == {"status": "Idle"}


async def test_getlog_securitylog_uploads_the_local_security_log(tmp_path: Path) -> None:
    with http_upload_server() as http:
        async with logged_station(tmp_path) as (csms, _sim, _daemon):
            await csms.wait_for("StatusNotification", STATION_ID, timeout=20)
            answer = await csms.call(STATION_ID, "GetLog", {**get_log(http.url("/logs/"), 16), "logType": "SecurityLog"})
            await csms.wait_for("LogStatusNotification", STATION_ID, final(DONE), timeout=30)
    content = members(http.received[f"/logs/{answer['filename']}"])
    assert "-security-" in answer["filename"]
    assert set(content) == {"manifest.json", "security.log"}
    assert b"StartupOfTheDevice" in content["security.log"]


async def test_getlog_and_getdiagnostics_from_the_dev_csms_command_line(tmp_path: Path) -> None:
    from tests.test_e2e_device_model import cli, csms_process, station

    for version in ("201", "16"):
        (tmp_path / version).mkdir()
    with http_upload_server() as http:
        async with csms_process(tmp_path) as csms:
            async with station(tmp_path / "201", csms, "201", STATION_LOG_UPLOAD_ALLOW_LOCAL="true"):
                code, lines = await cli(csms, STATION_ID, "GetLog", json.dumps(get_log(http.url("/cli/"), 21)),
                                        "--wait-for", "LogStatusNotification", "--until", "status=Uploaded,UploadFailure")
            async with station(tmp_path / "16", csms, "16", STATION_LOG_UPLOAD_ALLOW_LOCAL="true"):
                code16, lines16 = await cli(csms, STATION_ID, "GetDiagnostics", json.dumps({"location": http.url("/cli16/")}),
                                            "--wait-for", "DiagnosticsStatusNotification",
                                            "--until", "status=Uploaded,UploadFailed")
    assert code == 0 and lines[0]["payload"]["status"] == "Accepted"
    assert [line["payload"]["status"] for line in lines if line["kind"] == "message"] == ["Uploading", "Uploaded"]
    assert code16 == 0 and lines16[0]["payload"]["fileName"].endswith(".tar.gz")
    assert [line["payload"]["status"] for line in lines16 if line["kind"] == "message"] == ["Uploading", "Uploaded"]
    assert f"/cli/{lines[0]['payload']['filename']}" in http.received
    assert f"/cli16/{lines16[0]['payload']['fileName']}" in http.received


async def test_16_extended_trigger_log_status_notification_says_idle(tmp_path: Path) -> None:
    async with logged_station(tmp_path, version="16") as (csms, _sim, _daemon):
        await csms.wait_for("StatusNotification", STATION_ID, timeout=20)
        answer = await csms.call(STATION_ID, "ExtendedTriggerMessage", {"requestedMessage": "LogStatusNotification"})
        notification = await csms.wait_for("LogStatusNotification", STATION_ID, timeout=10)
    assert answer["status"] == "Accepted" and notification.payload == {"status": "Idle"}


class _HoldFirstUpload(dict[str, float]):
    """`delay_s` holding the first upload's answer back (the upload is still running when the daemon
    is killed); the uploads after it are answered at once."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self.held = 0

    def get(self, key: str, default: float | None = None) -> float:  # type: ignore[override]
        self.held += 1
        return self.seconds if self.held == 1 else 0.0


async def killed_mid_upload(tmp_path: Path, version: str, call: Callable[[str], tuple[str, dict[str, Any]]],
                            status_action: str) -> tuple[DevCsms, Any, str]:
    """`call` answered with a file name, the daemon SIGKILLed while the server holds the upload, started
    again on the same state: (csms, upload server, file name) once the final status arrived.
    `call`: (action, payload) for the upload location."""
    with http_upload_server() as http:
        http.delay_s = _HoldFirstUpload(10.0)
        async with logged_station(tmp_path, version) as (csms, _sim, daemon):
            await csms.wait_for("StatusNotification", STATION_ID, timeout=20)
            answer = await csms.call(STATION_ID, *call(http.url("/logs/")))
            name = answer.get("filename") or answer.get("fileName")
            assert name, answer
            await eventually(lambda: http.hits(f"/logs/{name}") >= 1, timeout=30)
            await daemon.stop(signal.SIGKILL)
            mark = csms.mark()
            restarted = await DaemonProcess(daemon.env, tmp_path / "station.log").start()
            try:
                await csms.wait_for(status_action, STATION_ID,
                                    final(DONE | {"UploadFailed"}), since=mark, timeout=30)
                await eventually(lambda: not (tmp_path / "state" / "diagnostics" / "request.json").exists(), timeout=10)
            finally:
                await restarted.stop()
        return csms, http, name


async def test_a_log_upload_killed_midway_is_uploaded_after_the_restart_when_tries_are_left(tmp_path: Path) -> None:
    csms, http, name = await killed_mid_upload(
        tmp_path, "201", lambda location: ("GetLog", get_log(location, 31, retries=2, retryInterval=0)),
        "LogStatusNotification")
    assert statuses(csms, "LogStatusNotification", 31)[-1] == "Uploaded"
    assert "manifest.json" in members(http.received[f"/logs/{name}"])


async def test_a_diagnostics_upload_killed_midway_without_tries_left_is_reported_failed_after_the_restart(
        tmp_path: Path) -> None:
    csms, http, name = await killed_mid_upload(
        tmp_path, "16", lambda location: ("GetDiagnostics", {"location": location, "retries": 0}),
        "DiagnosticsStatusNotification")
    assert statuses(csms, "DiagnosticsStatusNotification") == ["Uploading", "UploadFailed"]
    assert http.hits(f"/logs/{name}") == 1  # the spent try is not made again
