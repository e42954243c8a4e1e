"""A CSMS cannot aim a log upload at the station itself, and every upload error ends the request with a
final status (issue 21 finding 7), against the strict dev CSMS and real upload servers on loopback."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from station.devtools.csms import DevCsms
from station.diagnostics import archive
from station.diagnostics.log_upload import LogUploader
from station.diagnostics.upload import UploadError, forbidden_address, resolve_target, upload
from tests.ocpp_helpers import Rig
from tests.pki_helpers import key_pem, make_ca, make_leaf, pem
from tests.upload_servers import ftp_upload_server, http_upload_server

NAME = "uploads.test"
PUBLIC = "198.51.100.10"
"""TEST-NET-2: passes the check; the connection guard below refuses it, so nothing leaves the machine."""


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
    """ftplib raises ValueError for CR/LF in a command; the request still ends with a final status, at
    once: the CSMS asked for 3 retries a minute apart, but no retry can make that location usable."""
    async with DevCsms(heartbeat_interval=300) as csms:
        rig = Rig("201", csms, tmp_path / "station.db")
        rig.logs = uploader(tmp_path, allow_local=True)  # the FTP server is on loopback
        await rig.start()
        try:
            await csms.wait_for("StatusNotification", timeout=10)
            with ftp_upload_server(tmp_path / "ftp") as ftp:
                location = ftp.url("/incoming%0d%0aDELE%20x/")
                answer = await csms.call("CP", "GetLog", {"logType": "DiagnosticsLog", "requestId": 6, "retries": 3,
                                                          "retryInterval": 60, "log": {"remoteLocation": location}})
                assert answer["status"] == "Accepted"
                final = await csms.wait_for("LogStatusNotification", timeout=20,
                                            predicate=lambda r: r.payload["status"] != "Uploading")
        finally:
            await rig.stop()
    assert final.payload == {"status": "BadMessage", "requestId": 6}


# ------------------------------------------------------------------------- DNS rebinding (issue 21)
@dataclass
class Rebinding:
    """Answers for NAME: `first` to the first `checks` lookups, 127.0.0.1 to every later one."""

    first: str
    checks: int
    lookups: int = 0


@pytest.fixture
def rebinding(monkeypatch: pytest.MonkeyPatch) -> Any:
    real = socket.getaddrinfo

    def install(first: str, *, checks: int) -> Rebinding:
        state = Rebinding(first, checks)

        def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
            if (host.decode() if isinstance(host, bytes) else host) != NAME:  # anyio passes bytes
                return real(host, port, *args, **kwargs)
            state.lookups += 1
            address = state.first if state.lookups <= state.checks else "127.0.0.1"
            return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, int(port or 0)))]

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
        return state

    return install


_watchers: list[list[tuple[str, int]]] = []
_watchers_installed: list[Any] = []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event != "socket.connect" or not _watchers or args[0].family not in (socket.AF_INET, socket.AF_INET6):
        return
    host, port = str(args[1][0]), int(args[1][1])
    for seen in _watchers:
        seen.append((host, port))
    try:
        loopback = ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ConnectionRefusedError(f"test guard: no connection to {host} leaves this machine")


@contextmanager
def watching_connects() -> Iterator[list[tuple[str, int]]]:
    """Every TCP connect made meanwhile (address, port); any outside loopback is refused."""
    if _audit not in _watchers_installed:
        sys.addaudithook(_audit)  # audit hooks cannot be removed: it does nothing without a watcher
        _watchers_installed.append(_audit)
    seen: list[tuple[str, int]] = []
    _watchers.append(seen)
    try:
        yield seen
    finally:
        _watchers.remove(seen)


@pytest.fixture
def archive_file(tmp_path: Path) -> Path:
    path = tmp_path / "CP-diagnostics-20261207T000000Z.tar.gz"
    path.write_bytes(b"\x1f\x8b archive " * 50)
    return path


@pytest.mark.parametrize("scheme", ["http", "ftp"])
async def test_an_upload_connects_to_the_checked_address_when_the_name_resolves_to_loopback_afterwards(
        rebinding: Any, tmp_path: Path, archive_file: Path, scheme: str) -> None:
    resolver = rebinding(PUBLIC, checks=1)
    with http_upload_server() as web, ftp_upload_server(tmp_path / "ftp") as ftp:
        port = web.port if scheme == "http" else ftp.port
        location = f"{scheme}://logs:ftp-pass@{NAME}:{port}/incoming/"
        addresses = await resolve_target(location)  # the check sees a public address
        with watching_connects() as connects, pytest.raises(UploadError) as failed:
            await upload(archive_file, location, addresses=addresses, timeout=5)  # the name is loopback now
        received = web.methods, ftp.files()
    assert addresses == (PUBLIC,) and connects == [(PUBLIC, port)]
    assert received == ([], {}) and failed.value.status == "UploadFailure"
    assert resolver.lookups == 1


async def test_a_log_upload_whose_name_turns_to_loopback_after_its_checks_never_reaches_loopback(
        rebinding: Any, tmp_path: Path) -> None:
    """The request's check and the attempt's check both see a public address; any lookup after them
    (a library resolving the name again at connect time) would get 127.0.0.1."""
    rebinding(PUBLIC, checks=2)
    async with DevCsms(heartbeat_interval=300) as csms:
        rig = Rig("201", csms, tmp_path / "station.db")
        rig.logs = uploader(tmp_path, allow_local=False)
        await rig.start()
        try:
            await csms.wait_for("StatusNotification", timeout=10)
            with http_upload_server() as web, watching_connects() as connects:
                answer = await csms.call("CP", "GetLog", {"logType": "DiagnosticsLog", "requestId": 8,
                                                          "log": {"remoteLocation": f"http://{NAME}:{web.port}/logs/"}})
                final = await csms.wait_for("LogStatusNotification", timeout=20,
                                            predicate=lambda r: r.payload["status"] != "Uploading")
        finally:
            await rig.stop()
    assert answer["status"] == "Accepted"
    assert final.payload == {"status": "UploadFailure", "requestId": 8}
    assert web.methods == [] and (PUBLIC, web.port) in connects and ("127.0.0.1", web.port) not in connects


def name_only_certificate(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for NAME only (no address): (ca, certificate, key) files."""
    ca = make_ca("Upload CA")
    key, cert = make_leaf(ca, NAME, server=True, dns_names=(NAME,))
    directory.mkdir(parents=True, exist_ok=True)
    files = (directory / "ca.pem", directory / "server.pem", directory / "server.key")
    for path, data in zip(files, (pem(ca[1]).encode(), pem(cert).encode(), key_pem(key)), strict=True):
        path.write_bytes(data)
    return files


async def test_https_to_the_checked_address_keeps_the_name_for_host_header_sni_and_certificate(
        rebinding: Any, tmp_path: Path, archive_file: Path) -> None:
    rebinding("127.0.0.1", checks=1_000)
    ca, cert, key = name_only_certificate(tmp_path / "pki")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    sni: list[str | None] = []
    context.sni_callback = lambda _sock, server_name, _ctx: sni.append(server_name)  # type: ignore[assignment, func-returns-value]
    with http_upload_server(context) as web:
        await upload(archive_file, f"https://{NAME}:{web.port}/logs/", ca_bundle=str(ca), timeout=10)
    assert web.received == {f"/logs/{archive_file.name}": archive_file.read_bytes()}
    assert web.hosts == [f"{NAME}:{web.port}"] and sni == [NAME]


async def test_ftps_to_the_checked_address_verifies_the_certificate_of_the_name(
        rebinding: Any, tmp_path: Path, archive_file: Path) -> None:
    rebinding("127.0.0.1", checks=1_000)
    ca, cert, key = name_only_certificate(tmp_path / "pki")
    with ftp_upload_server(tmp_path / "ftps", tls=(cert, key)) as ftps:
        await upload(archive_file, f"ftps://logs:ftp-pass@{NAME}:{ftps.port}/incoming/", ca_bundle=str(ca), timeout=10)
        files = ftps.files()
    assert files == {f"incoming/{archive_file.name}": archive_file.read_bytes()}
