"""Where an archive goes and how a server's answer becomes the CSMS's status (real servers on loopback)."""

from __future__ import annotations

from pathlib import Path

import pytest

from station.diagnostics.upload import UploadError, check_location, target_url, upload
from tests.pki_helpers import make_pki
from tests.upload_servers import ftp_upload_server, http_upload_server

ARCHIVE = b"\x1f\x8b not really gzip " * 100


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    path = tmp_path / "CP-diagnostics-20261130T000000Z.tar.gz"
    path.write_bytes(ARCHIVE)
    return path


def test_a_location_ending_in_a_slash_is_a_directory_and_a_presigned_url_keeps_its_query() -> None:
    assert target_url("https://h/logs/", "a.tar.gz") == "https://h/logs/a.tar.gz"
    assert target_url("https://u:p@h/bucket/a.tar.gz?X-Sig=1", "b.tar.gz") == "https://h/bucket/a.tar.gz?X-Sig=1"


@pytest.mark.parametrize("location", ["sftp://h/x", "file:///etc/passwd", "not a url", "http:///nohost"])
def test_locations_that_cannot_be_used_are_named(location: str) -> None:
    assert check_location(location) is not None


async def test_https_upload_verifies_the_server_against_the_given_ca(tmp_path: Path, archive: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    with http_upload_server(pki.server_context(require_client_cert=False)) as server:
        where = await upload(archive, server.url("/logs/"), ca_bundle=str(pki.ca), timeout=10)
        with pytest.raises(UploadError) as refused:
            await upload(archive, server.url("/other/"), timeout=10)  # system CAs do not know this server
    assert server.received["/logs/" + archive.name] == ARCHIVE and where.endswith(archive.name)
    assert refused.value.status == "UploadFailure" and "/other/" not in server.received


async def test_a_server_that_refuses_put_gets_a_multipart_post(archive: Path) -> None:
    with http_upload_server() as server:
        server.put_status = 405
        await upload(archive, server.url("/form"), timeout=10)
    assert server.methods == [("PUT", "/form"), ("POST", "/form")] and server.received["/form"] == ARCHIVE


@pytest.mark.parametrize(("status", "reported"), [(400, "BadMessage"), (403, "PermissionDenied"), (501, "NotSupportedOperation"),
                                                  (503, "UploadFailure")])
async def test_an_http_refusal_becomes_the_matching_log_status(archive: Path, status: int, reported: str) -> None:
    with http_upload_server() as server:
        server.answers["/x.tar.gz"] = [status]
        with pytest.raises(UploadError) as failed:
            await upload(archive, server.url("/x.tar.gz"), timeout=10)
    assert failed.value.status == reported


async def test_ftp_credentials_in_the_url_log_in_and_a_wrong_password_is_permission_denied(tmp_path: Path, archive: Path) -> None:
    with ftp_upload_server(tmp_path / "ftp", password="right-pw") as ftp:
        await upload(archive, ftp.url("/incoming/named.tar.gz"), timeout=10)
        with pytest.raises(UploadError) as refused:
            await upload(archive, ftp.url("/incoming/", userinfo="logs:wrong-pw"), timeout=10)
        files = ftp.files()
    assert files == {"incoming/named.tar.gz": ARCHIVE}
    assert refused.value.status == "PermissionDenied" and "wrong-pw" not in refused.value.detail


async def test_ftps_upload_protects_control_and_data_and_verifies_the_server(tmp_path: Path, archive: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    with ftp_upload_server(tmp_path / "ftps", tls=(pki.server_cert, pki.server_key)) as ftps:
        await upload(archive, ftps.url("/incoming/"), ca_bundle=str(pki.ca), timeout=10)
        with pytest.raises(UploadError) as unverified:
            await upload(archive, ftps.url("/incoming/again.tar.gz"), timeout=10)  # system CAs do not know it
        files = ftps.files()
    assert files == {f"incoming/{archive.name}": ARCHIVE}
    assert unverified.value.status == "UploadFailure"
