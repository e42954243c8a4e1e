"""A02/A03: the station's client certificate renewed over real TLS with client certificates
(security profile 3) on loopback; the dev CSMS signs the CSR with its test CA."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from station.devtools.csms import CertificateAuthority, DevCsms
from tests.ocpp_helpers import Rig, eventually, started_rig
from tests.pki_helpers import TestPki, key_pem, make_ca, make_leaf, make_pki, pem

TRIGGER = {"201": ("TriggerMessage", "SignChargingStationCertificate"), "16": ("ExtendedTriggerMessage", "SignChargePointCertificate")}


@pytest.fixture
def test_pki(tmp_path: Path) -> TestPki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
async def csms(test_pki: TestPki) -> AsyncIterator[DevCsms]:
    authority = CertificateAuthority(test_pki.ca_pem, key_pem(test_pki.ca_key))
    async with DevCsms(ssl_context=test_pki.server_context(require_client_cert=True), certificate_authority=authority) as server:
        yield server


async def started(version: str, csms: DevCsms, test_pki: TestPki, tmp_path: Path) -> Rig:
    return await started_rig(version, csms, tmp_path, ca_bundle=test_pki.ca, client_cert=test_pki.client_cert,
                             client_key=test_pki.client_key)


async def set_organization(rig: Rig, name: str) -> None:
    if rig.version == "201":
        answer = await rig.csms.call("CP", "SetVariables", {"setVariableData": [{
            "component": {"name": "SecurityCtrlr"}, "variable": {"name": "OrganizationName"}, "attributeValue": name}]})
        assert answer["setVariableResult"][0]["attributeStatus"] == "Accepted"
    else:
        assert (await rig.csms.call("CP", "ChangeConfiguration", {"key": "CpoName", "value": name}))["status"] == "Accepted"


async def trigger_renewal(rig: Rig) -> int:
    """Set the organization name, then ask for a new certificate; the CSMS's mark before the trigger."""
    await set_organization(rig, "Test CPO")
    action, message = TRIGGER[rig.version]
    mark = rig.csms.mark()
    assert (await rig.csms.call("CP", action, {"requestedMessage": message})) == {"status": "Accepted"}
    return mark


def serial_of(der: bytes | None) -> int:
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


@pytest.mark.parametrize("version", ["201", "16"])
async def test_a_renewed_certificate_is_used_from_the_next_connection_on(
        version: str, csms: DevCsms, test_pki: TestPki, tmp_path: Path) -> None:
    rig = await started(version, csms, test_pki, tmp_path)
    try:
        provisioned = serial_of(csms.peer_certificates["CP"])
        mark = await trigger_renewal(rig)
        sign = await csms.wait_for("SignCertificate", since=mark, timeout=10)
        csr = x509.load_pem_x509_csr(sign.payload["csr"].encode())
        assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "CP"
        assert csr.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Test CPO"
        if version == "201":
            assert sign.payload["certificateType"] == "ChargingStationCertificate"
        await eventually(lambda: csms.connected("CP") and serial_of(csms.peer_certificates["CP"]) != provisioned, timeout=10)
        renewed = x509.load_der_x509_certificate(csms.peer_certificates["CP"] or b"")
        assert renewed.public_key().public_numbers() == csr.public_key().public_numbers()  # type: ignore[union-attr]
        key = tmp_path / "state" / "pki" / "station" / "current" / "key.pem"
        await eventually(key.exists)
        assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
        # the provisioned one stays in place: the renewed pair is the only generation
        assert [p.name for p in (tmp_path / "state" / "pki" / "station").glob("gen-*")] == [key.resolve().parent.name]
    finally:
        await rig.stop()
    rig = await started(version, csms, test_pki, tmp_path)  # a restart keeps the renewed certificate
    try:
        assert serial_of(csms.peer_certificates["CP"]) == renewed.serial_number
    finally:
        await rig.stop()


@pytest.mark.parametrize("version", ["201", "16"])
async def test_a_chain_from_another_ca_is_refused_and_the_old_certificate_kept(
        version: str, test_pki: TestPki, tmp_path: Path) -> None:
    stranger = make_ca("Somebody else's CA")
    async with DevCsms(ssl_context=test_pki.server_context(require_client_cert=True),
                       certificate_authority=CertificateAuthority(pem(stranger[1]), key_pem(stranger[0]))) as csms:
        rig = await started(version, csms, test_pki, tmp_path)
        try:
            provisioned = serial_of(csms.peer_certificates["CP"])
            mark = await trigger_renewal(rig)
            event = await csms.wait_for("SecurityEventNotification", since=mark, timeout=10)
            assert event.payload["type"] == ("InvalidChargingStationCertificate" if version == "201" else "InvalidChargePointCertificate")
            answers = [r for r in csms.received[mark:] if r.kind == "result" and r.action == "CertificateSigned"]
            assert [a.payload["status"] for a in answers] == ["Rejected"]
            await csms.disconnect("CP")
            await csms.wait_connected("CP")
            assert serial_of(csms.peer_certificates["CP"]) == provisioned
            assert not list((tmp_path / "state" / "pki" / "station").glob("gen-*"))
        finally:
            await rig.stop()


async def test_a_certificate_for_a_key_the_station_never_made_is_refused(csms: DevCsms, test_pki: TestPki, tmp_path: Path) -> None:
    rig = await started("201", csms, test_pki, tmp_path)
    try:
        _, foreign = make_leaf((test_pki.ca_key, test_pki.ca_cert), "CP", organization="Test CPO")
        answer = await csms.call("CP", "CertificateSigned", {"certificateChain": pem(foreign)})
        assert answer["status"] == "Rejected"  # no CSR outstanding: nothing to match
        await set_organization(rig, "Test CPO")
        csms.certificate_authority = None  # the CSMS accepts nothing: the CSR stays outstanding
        await csms.call("CP", "TriggerMessage", {"requestedMessage": "SignChargingStationCertificate"})
        await csms.wait_for("SignCertificate", timeout=10)
        answer = await csms.call("CP", "CertificateSigned", {"certificateChain": pem(foreign)})
        assert answer["status"] == "Rejected" and "key" in answer["statusInfo"]["additionalInfo"]
    finally:
        await rig.stop()


async def test_the_trigger_is_rejected_until_the_organization_name_is_set(csms: DevCsms, test_pki: TestPki, tmp_path: Path) -> None:
    rig = await started("201", csms, test_pki, tmp_path)
    try:
        answer = await csms.call("CP", "TriggerMessage", {"requestedMessage": "SignChargingStationCertificate"})
        assert answer == {"status": "Rejected"}
    finally:
        await rig.stop()


async def test_an_unanswered_signing_request_is_repeated_with_a_doubling_wait(
        csms: DevCsms, test_pki: TestPki, tmp_path: Path) -> None:
    import time

    rig = await started("201", csms, test_pki, tmp_path)
    try:
        csms.override("SignCertificate", lambda r: {"status": "Accepted"})  # accepted, never signed
        await set_organization(rig, "Test CPO")
        for name, value in (("CertSigningWaitMinimum", "2"), ("CertSigningRepeatTimes", "2")):
            await csms.call("CP", "SetVariables", {"setVariableData": [{
                "component": {"name": "SecurityCtrlr"}, "variable": {"name": name}, "attributeValue": value}]})
        await csms.call("CP", "TriggerMessage", {"requestedMessage": "SignChargingStationCertificate"})
        await eventually(lambda: len(csms.calls("SignCertificate")) == 3, timeout=20)
        times = [r.at.timestamp() for r in csms.calls("SignCertificate")]
        # waits of 2 s, then 4 s (each interval also holds the making of the CSR)
        assert (times[2] - times[1]) - (times[1] - times[0]) > 1.0
        started_at = time.monotonic()
        await eventually(lambda: time.monotonic() - started_at > 9, timeout=11)
        assert len(csms.calls("SignCertificate")) == 3  # CertSigningRepeatTimes = 2: no fourth
    finally:
        await rig.stop()


async def test_a_certificate_expiring_within_a_month_is_renewed_by_the_station_itself(
        csms: DevCsms, test_pki: TestPki, tmp_path: Path) -> None:
    rig = await started("201", csms, test_pki, tmp_path)  # the provisioned certificate is valid for one day
    try:
        await set_organization(rig, "Test CPO")
    finally:
        await rig.stop()
    mark = csms.mark()
    rig = await started("201", csms, test_pki, tmp_path)  # A03: at the next connection, unasked
    try:
        await csms.wait_for("SignCertificate", since=mark, timeout=10)
        await eventually(lambda: csms.connected("CP") and (tmp_path / "state" / "pki" / "station" / "current" / "cert.pem").exists())
    finally:
        await rig.stop()


async def test_a_certificate_valid_from_later_is_used_from_its_not_before_on(csms: DevCsms, test_pki: TestPki, tmp_path: Path) -> None:
    import datetime as dt

    from cryptography.hazmat.primitives import serialization

    rig = await started("201", csms, test_pki, tmp_path)
    try:
        provisioned = serial_of(csms.peer_certificates["CP"])
        csms.certificate_authority = None  # the test signs instead, with a start a few seconds ahead
        await set_organization(rig, "Test CPO")
        await csms.call("CP", "TriggerMessage", {"requestedMessage": "SignChargingStationCertificate"})
        await csms.wait_for("SignCertificate", timeout=10)
        key = serialization.load_pem_private_key((tmp_path / "state" / "pki" / "station" / "pending.key").read_bytes(), None)
        start = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=4)
        _, later = make_leaf((test_pki.ca_key, test_pki.ca_cert), "CP", organization="Test CPO", key=key, start=start)  # type: ignore[arg-type]
        assert (await csms.call("CP", "CertificateSigned", {"certificateChain": pem(later)}))["status"] == "Accepted"
        await asyncio.sleep(1.5)
        assert serial_of(csms.peer_certificates["CP"]) == provisioned and csms.connected("CP")  # not valid yet
        await eventually(lambda: csms.connected("CP") and serial_of(csms.peer_certificates["CP"]) == later.serial_number,
                         timeout=15)
    finally:
        await rig.stop()
