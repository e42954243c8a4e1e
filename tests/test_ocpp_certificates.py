"""Certificate management (M03-M05, whitepaper) against the dev CSMS, both versions; every payload is
schema-checked by both ends. TLS tests use a throwaway CA made in the test."""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.x509 import ocsp

from station.trust import pki
from station.devtools.csms import DevCsms
from tests.ocpp_helpers import Rig
from tests.pki_helpers import make_ca, make_leaf, make_pki, pem

ROOT_NAME = {"201": {pki.CSMS_ROOT: "CSMSRootCertificate", pki.MANUFACTURER_ROOT: "ManufacturerRootCertificate"},
             "16": {pki.CSMS_ROOT: "CentralSystemRootCertificate", pki.MANUFACTURER_ROOT: "ManufacturerRootCertificate"}}


@pytest.fixture(params=["201", "16"])
async def rig(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    async with DevCsms(heartbeat_interval=300) as csms:
        rig = Rig(request.param, csms, tmp_path / "station.db", state_dir=tmp_path / "state")
        mark = csms.mark()
        await rig.start()
        await csms.wait_for("StatusNotification", since=mark, timeout=10)
        yield rig
        await rig.stop()


async def installed_ids(rig: Rig, kind: str) -> dict[str, object]:
    payload = {"certificateType": ROOT_NAME[rig.version][kind]}
    if rig.version == "201":
        payload = {"certificateType": [payload["certificateType"]]}
    return await rig.csms.call("CP", "GetInstalledCertificateIds", payload)


def hash_list(rig: Rig, answer: dict[str, object]) -> list[dict[str, str]]:
    if rig.version == "16":
        return list(answer.get("certificateHashData", []))  # type: ignore[arg-type]
    return [c["certificateHashData"] for c in answer.get("certificateHashDataChain", [])]  # type: ignore[index,union-attr]


async def test_an_installed_root_is_listed_with_the_ocsp_hash_data(rig: Rig) -> None:
    _, root = make_ca("Operator root")
    answer = await rig.csms.call("CP", "InstallCertificate",
                                 {"certificateType": ROOT_NAME[rig.version][pki.CSMS_ROOT], "certificate": pem(root)})
    assert answer == {"status": "Accepted"}
    listed = hash_list(rig, await installed_ids(rig, pki.CSMS_ROOT))
    request = ocsp.OCSPRequestBuilder().add_certificate(root, root, hashes.SHA256()).build()  # an independent reckoning
    assert listed == [{"hashAlgorithm": "SHA256", "issuerNameHash": request.issuer_name_hash.hex(),
                       "issuerKeyHash": request.issuer_key_hash.hex(), "serialNumber": format(root.serial_number, "x")}]


async def test_a_deleted_root_is_gone_and_a_second_delete_finds_nothing(rig: Rig) -> None:
    _, root = make_ca("Manufacturer root")
    await rig.csms.call("CP", "InstallCertificate",
                        {"certificateType": ROOT_NAME[rig.version][pki.MANUFACTURER_ROOT], "certificate": pem(root)})
    [hash_data] = hash_list(rig, await installed_ids(rig, pki.MANUFACTURER_ROOT))
    assert await rig.csms.call("CP", "DeleteCertificate", {"certificateHashData": hash_data}) == {"status": "Accepted"}
    assert await installed_ids(rig, pki.MANUFACTURER_ROOT) == {"status": "NotFound"}
    assert await rig.csms.call("CP", "DeleteCertificate", {"certificateHashData": hash_data}) == {"status": "NotFound"}


async def test_a_certificate_that_is_no_ca_is_rejected_with_a_security_event(rig: Rig) -> None:
    leaf = make_leaf(make_ca("Some CA"), "not-a-ca")[1]
    mark = rig.csms.mark()
    answer = await rig.csms.call("CP", "InstallCertificate",
                                 {"certificateType": ROOT_NAME[rig.version][pki.CSMS_ROOT], "certificate": pem(leaf)})
    assert answer["status"] == "Rejected"
    assert await installed_ids(rig, pki.CSMS_ROOT) == {"status": "NotFound"}
    event = await rig.csms.wait_for("SecurityEventNotification", since=mark, timeout=10)
    assert event.payload["type"] == ("InvalidCsmsCertificate" if rig.version == "201" else "InvalidCentralSystemCertificate")


async def test_an_expired_root_is_rejected(rig: Rig) -> None:
    import datetime as dt

    _, old = make_ca("Old root", start=dt.datetime.now(dt.UTC) - dt.timedelta(days=10), days=2)
    answer = await rig.csms.call("CP", "InstallCertificate",
                                 {"certificateType": ROOT_NAME[rig.version][pki.CSMS_ROOT], "certificate": pem(old)})
    assert answer["status"] == "Rejected"


async def test_iso15118_roots_are_refused_and_none_are_listed(tmp_path: Path) -> None:
    async with DevCsms() as csms:
        rig = await Rig("201", csms, tmp_path / "station.db", state_dir=tmp_path / "state").start()
        try:
            await csms.wait_for("StatusNotification", timeout=10)
            _, root = make_ca("V2G root")
            answer = await csms.call("CP", "InstallCertificate", {"certificateType": "V2GRootCertificate", "certificate": pem(root)})
            assert answer["status"] == "Rejected" and "15118" in answer["statusInfo"]["additionalInfo"]
            assert await csms.call("CP", "GetInstalledCertificateIds", {"certificateType": ["V2GRootCertificate"]}) == {"status": "NotFound"}
        finally:
            await rig.stop()


async def test_the_root_verifying_the_tls_connection_cannot_be_deleted(tmp_path: Path) -> None:
    made = make_pki(tmp_path / "pki")
    async with DevCsms(ssl_context=made.server_context(require_client_cert=False), passwords={"CP": "s3cret-Passw0rd-16"}) as csms:
        rig = Rig("201", csms, tmp_path / "station.db", state_dir=tmp_path / "state",
                  link={"password": "s3cret-Passw0rd-16", "ca_bundle": made.ca})
        await rig.start()
        try:
            await csms.wait_for("StatusNotification", timeout=10)
            [chain] = (await csms.call("CP", "GetInstalledCertificateIds", {"certificateType": ["CSMSRootCertificate"]}))[
                "certificateHashDataChain"]  # the provisioned bundle, seeded into the store
            answer = await csms.call("CP", "DeleteCertificate", {"certificateHashData": chain["certificateHashData"]})
            assert answer["status"] == "Failed"
            assert len((await csms.call("CP", "GetInstalledCertificateIds", {}))["certificateHashDataChain"]) == 1
        finally:
            await rig.stop()


async def test_store_files_hold_no_key_and_the_state_is_private(rig: Rig, tmp_path: Path) -> None:
    _, root = make_ca("Operator root")
    await rig.csms.call("CP", "InstallCertificate",
                        {"certificateType": ROOT_NAME[rig.version][pki.CSMS_ROOT], "certificate": pem(root)})
    state = tmp_path / "state" / "pki" / "credentials.json"
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o600
    assert all(b"PRIVATE KEY" not in p.read_bytes() for p in (tmp_path / "state" / "pki" / "roots").rglob("*.pem"))
