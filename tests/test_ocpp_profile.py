"""A05: the security profile raised over OCPP, never lowered, with a fallback when the new one
cannot connect. Real TLS on loopback with a throwaway CA."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from cryptography import x509

from station.devtools.csms import CertificateAuthority, DevCsms
from tests.ocpp_helpers import Rig, eventually, started_rig
from tests.pki_helpers import TestPki, key_pem, make_pki

PASSWORD = "profile-Passw0rd-123"


@pytest.fixture
def test_pki(tmp_path: Path) -> TestPki:
    return make_pki(tmp_path / "pki")


def optional_client_certs(test_pki: TestPki) -> ssl.SSLContext:
    context = test_pki.server_context(require_client_cert=False)
    context.load_verify_locations(test_pki.ca)
    context.verify_mode = ssl.CERT_OPTIONAL
    return context


async def started(version: str, csms: DevCsms, test_pki: TestPki, tmp_path: Path, **link: object) -> Rig:
    settings = {"password": PASSWORD, "ca_bundle": test_pki.ca, "client_cert": test_pki.client_cert,
                "client_key": test_pki.client_key, "security_profile": 2, **link}
    return await started_rig(version, csms, tmp_path, **settings)


async def set_profile(rig: Rig, profile: int) -> str:
    if rig.version == "201":
        answer = await rig.csms.call("CP", "SetVariables", {"setVariableData": [{
            "component": {"name": "SecurityCtrlr"}, "variable": {"name": "SecurityProfile"}, "attributeValue": str(profile)}]})
        return str(answer["setVariableResult"][0]["attributeStatus"])
    return str((await rig.csms.call("CP", "ChangeConfiguration", {"key": "SecurityProfile", "value": str(profile)}))["status"])


@pytest.mark.parametrize("version", ["201", "16"])
async def test_raising_the_profile_reconnects_with_the_client_certificate(version: str, test_pki: TestPki, tmp_path: Path) -> None:
    async with DevCsms(ssl_context=optional_client_certs(test_pki)) as csms:
        rig = await started(version, csms, test_pki, tmp_path)
        try:
            assert csms.peer_certificates["CP"] is None  # profile 2: no client certificate
            mark = csms.mark()
            assert await set_profile(rig, 3) == "Accepted"
            await csms.wait_for("StatusNotification", since=mark, timeout=10)
            await eventually(lambda: csms.peer_certificates.get("CP") is not None)
            assert rig.client is not None and rig.client.link.profile == 3
            event = await csms.wait_for("SecurityEventNotification", since=mark, timeout=10,
                                        predicate=lambda r: "profile 3 in use" in r.payload.get("techInfo", ""))
            assert event.payload["type"] == "ReconfigurationOfSecurityParameters"
        finally:
            await rig.stop()
        rig = await started(version, csms, test_pki, tmp_path)  # persisted: still 3 after a restart
        try:
            assert rig.client is not None and rig.client.link.profile == 3
            assert await set_profile(rig, 2) == "Rejected"  # and never back down (A05.FR.01)
        finally:
            await rig.stop()


@pytest.mark.parametrize("version", ["201", "16"])
async def test_the_profile_is_never_lowered_nor_set_to_the_same_value(version: str, test_pki: TestPki, tmp_path: Path) -> None:
    async with DevCsms(ssl_context=optional_client_certs(test_pki)) as csms:
        rig = await started(version, csms, test_pki, tmp_path)
        try:
            assert await set_profile(rig, 1) == "Rejected"
            assert await set_profile(rig, 2) == "Rejected"
            assert rig.client is not None and rig.client.link.profile == 2
        finally:
            await rig.stop()


async def test_profile_3_without_a_client_certificate_is_rejected(test_pki: TestPki, tmp_path: Path) -> None:
    async with DevCsms(ssl_context=optional_client_certs(test_pki)) as csms:
        rig = await started("201", csms, test_pki, tmp_path, client_cert=None, client_key=None)
        try:
            assert await set_profile(rig, 3) == "Rejected"
        finally:
            await rig.stop()


async def test_profile_2_needs_wss_urls(tmp_path: Path) -> None:
    async with DevCsms(passwords={"CP": PASSWORD}) as csms:  # ws:// only
        rig = Rig("201", csms, tmp_path / "station.db", state_dir=tmp_path / "state", link={"password": PASSWORD})
        await rig.start()
        try:
            await csms.wait_for("StatusNotification", timeout=10)
            assert rig.client is not None and rig.client.link.profile == 1
            answer = await csms.call("CP", "SetVariables", {"setVariableData": [{
                "component": {"name": "SecurityCtrlr"}, "variable": {"name": "SecurityProfile"}, "attributeValue": "2"}]})
            result = answer["setVariableResult"][0]
            assert result["attributeStatus"] == "Rejected" and "wss" in result["attributeStatusInfo"]["additionalInfo"]
        finally:
            await rig.stop()


@pytest.mark.parametrize("version", ["201", "16"])
async def test_a_profile_the_csms_does_not_accept_falls_back_and_is_reported(
        version: str, test_pki: TestPki, tmp_path: Path) -> None:
    # This CSMS still wants the password: a profile 3 connection (certificate, no password) gets 401.
    async with DevCsms(ssl_context=optional_client_certs(test_pki), passwords={"CP": PASSWORD}) as csms:
        rig = await started(version, csms, test_pki, tmp_path)
        try:
            mark = csms.mark()
            assert await set_profile(rig, 3) == "Accepted"
            event = await csms.wait_for("SecurityEventNotification", since=mark, timeout=15,
                                        predicate=lambda r: "could not connect" in r.payload.get("techInfo", ""))
            assert event.payload["type"] == "ReconfigurationOfSecurityParameters"
            assert len(csms.auth_failures) == 3
            assert rig.client is not None and rig.client.link.profile == 2
        finally:
            await rig.stop()


async def test_a_certificate_signed_on_profile_2_makes_the_raise_to_3_possible(test_pki: TestPki, tmp_path: Path) -> None:
    """TC_A_19's preparation: renew the certificate on profile 2, then raise to 3 and connect with it."""
    authority = CertificateAuthority(test_pki.ca_pem, key_pem(test_pki.ca_key))
    async with DevCsms(ssl_context=optional_client_certs(test_pki), certificate_authority=authority) as csms:
        rig = await started("201", csms, test_pki, tmp_path, client_cert=None, client_key=None)
        try:
            assert await set_profile(rig, 3) == "Rejected"  # no client certificate yet
            await csms.call("CP", "SetVariables", {"setVariableData": [{
                "component": {"name": "SecurityCtrlr"}, "variable": {"name": "OrganizationName"}, "attributeValue": "Test CPO"}]})
            mark = csms.mark()
            await csms.call("CP", "TriggerMessage", {"requestedMessage": "SignChargingStationCertificate"})
            await csms.wait_for("SignCertificate", since=mark, timeout=10)
            await eventually(lambda: (tmp_path / "state" / "pki" / "station" / "current" / "cert.pem").exists())
            assert await set_profile(rig, 3) == "Accepted"
            await eventually(lambda: csms.connected("CP") and csms.peer_certificates.get("CP") is not None)
            presented = x509.load_der_x509_certificate(csms.peer_certificates["CP"] or b"")
            installed = x509.load_pem_x509_certificate((tmp_path / "state" / "pki" / "station" / "current" / "cert.pem").read_bytes())
            assert presented.serial_number == installed.serial_number
        finally:
            await rig.stop()
