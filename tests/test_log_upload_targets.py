"""A CSMS cannot aim a log upload at the station itself, and every upload error ends the request with a
final status (issue 21 finding 7), against the strict dev CSMS and real upload servers on loopback."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from station.devtools.csms import DevCsms
from station.diagnostics import archive
from station.diagnostics.log_upload import LogUploader
from station.diagnostics.upload import forbidden_address
from tests.ocpp_helpers import Rig
from tests.upload_servers import ftp_upload_server


def uploader(tmp_path: Path, *, allow_local: bool) -> LogUploader:
    def sources(_since: Any, _until: Any) -> archive.Sources:
        return archive.Sources(station_id="CP", config={}, snapshot={}, journal=False)

    return LogUploader(tmp_path / "diagnostics", sources, station_id="CP", default_retries=0,
                       default_retry_interval_s=0, timeout_s=5, allow_local_targets=allow_local)


@pytest.fixture(params=["201", "16"])
async def rig(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    async with DevCsms(heartbeat_interval=300) as csms:
        rig = Rig(request.param, csms, tmp_path / "station.db")
        rig.logs = uploader(tmp_path, allow_local=False)
        await rig.start()
        try:
            await csms.wait_for("StatusNotification", timeout=10)
            yield rig
        finally:
            await rig.stop()


def own_address() -> str | None:
    """A non-loopback address of this machine (the source address of a route), if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: nothing is sent for a UDP connect
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") else address


@pytest.mark.parametrize("address", ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1", "169.254.10.1",
                                     "fe80::1", "0.0.0.0", "::"])
def test_loopback_link_local_and_unspecified_addresses_are_forbidden_upload_targets(address: str) -> None:
    assert forbidden_address(address) is not None


def test_the_stations_own_address_is_a_forbidden_upload_target_and_a_foreign_one_is_not() -> None:
    assert forbidden_address("192.0.2.77") is None  # TEST-NET-1: nobody's address here
    mine = own_address()
    if mine is None:
        pytest.skip("this machine has no routed non-loopback address")
    assert "own addresses" in str(forbidden_address(mine))


@pytest.mark.parametrize("location", ["http://127.0.0.1:8000/logs/", "http://localhost/logs/",
                                      "ftp://[::1]/incoming/", "https://169.254.169.254/latest/"])
async def test_a_log_upload_to_the_station_itself_is_rejected_and_the_reason_logged(rig: Rig, location: str) -> None:
    with capture_logs() as logs:
        if rig.version == "201":
            answer = await rig.csms.call("CP", "GetLog", {"logType": "DiagnosticsLog", "requestId": 5,
                                                          "log": {"remoteLocation": location}})
            assert answer["status"] == "Rejected"
            assert answer["statusInfo"]["reasonCode"] == "InvalidURL"
        else:
            answer = await rig.csms.call("CP", "GetDiagnostics", {"location": location})
            assert "fileName" not in answer  # 1.6: no file name, no upload
    refused = [e for e in logs if e["event"] == "logs: upload request refused"]
    assert len(refused) == 1 and ("loopback" in refused[0]["reason"] or "link-local" in refused[0]["reason"])
    assert rig.logs is not None and not rig.logs.busy


async def test_an_ftp_location_with_a_line_break_ends_with_a_final_failure_status(tmp_path: Path) -> None:
    """ftplib raises ValueError for CR/LF in a command; the request still ends with a final status."""
    async with DevCsms(heartbeat_interval=300) as csms:
        rig = Rig("201", csms, tmp_path / "station.db")
        rig.logs = uploader(tmp_path, allow_local=True)  # the FTP server is on loopback
        await rig.start()
        try:
            await csms.wait_for("StatusNotification", timeout=10)
            with ftp_upload_server(tmp_path / "ftp") as ftp:
                location = ftp.url("/incoming%0d%0aDELE%20x/")
                answer = await csms.call("CP", "GetLog", {"logType": "DiagnosticsLog", "requestId": 6,
                                                          "log": {"remoteLocation": location}})
                assert answer["status"] == "Accepted"
                final = await csms.wait_for("LogStatusNotification", timeout=20,
                                            predicate=lambda r: r.payload["status"] != "Uploading")
        finally:
            await rig.stop()
    assert final.payload == {"status": "BadMessage", "requestId": 6}
