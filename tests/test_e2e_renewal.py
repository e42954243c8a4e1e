"""End to end through the real `station run` process on security profile 3 (real TLS, client
certificates required): a root installed, the client certificate renewed and used from the next
connection; the certificate work runs in child processes, so `cryptography` never enters the daemon."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509

from station.devtools.csms import CertificateAuthority, DevCsms
from tests.e2e import STATION_ID, DaemonProcess, station_env
from tests.ocpp_helpers import eventually
from tests.pki_helpers import key_pem, make_ca, make_pki, pem


def cryptography_mapped(pid: int) -> bool:
    return "cryptography" in Path(f"/proc/{pid}/maps").read_text()


async def test_a_renewal_and_an_installed_root_leave_the_daemon_without_cryptography(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki", station_id=STATION_ID)
    authority = CertificateAuthority(pki.ca_pem, key_pem(pki.ca_key))
    async with DevCsms(ssl_context=pki.server_context(require_client_cert=True), certificate_authority=authority) as csms:
        env = station_env(tmp_path, csms, tmp_path / "no-esp32", STATION_CA_BUNDLE=str(pki.ca),
                          STATION_CLIENT_CERT=str(pki.client_cert), STATION_CLIENT_KEY=str(pki.client_key))
        env.pop("OCPP_16_URL")
        daemon = await DaemonProcess(env, tmp_path / "station.log").start()
        try:
            await csms.wait_for("StatusNotification", STATION_ID, timeout=20)
            provisioned = x509.load_der_x509_certificate(csms.peer_certificates[STATION_ID] or b"").serial_number
            installed = await csms.call(STATION_ID, "InstallCertificate", {
                "certificateType": "ManufacturerRootCertificate", "certificate": pem(make_ca("Manufacturer")[1])})
            assert installed == {"status": "Accepted"}
            await csms.call(STATION_ID, "SetVariables", {"setVariableData": [{
                "component": {"name": "SecurityCtrlr"}, "variable": {"name": "OrganizationName"}, "attributeValue": "Test CPO"}]})
            mark = csms.mark()
            answer = await csms.call(STATION_ID, "TriggerMessage", {"requestedMessage": "SignChargingStationCertificate"})
            assert answer == {"status": "Accepted"}
            await csms.wait_for("SignCertificate", STATION_ID, since=mark, timeout=20)
            await eventually(lambda: csms.connected(STATION_ID) and x509.load_der_x509_certificate(
                csms.peer_certificates[STATION_ID] or b"").serial_number != provisioned, timeout=20)
            await eventually(lambda: (tmp_path / "state" / "pki" / "station" / "current" / "cert.pem").exists(), timeout=10)
            ids = await csms.call(STATION_ID, "GetInstalledCertificateIds", {})
            assert {c["certificateType"] for c in ids["certificateHashDataChain"]} == {
                "CSMSRootCertificate", "ManufacturerRootCertificate"}
            assert daemon.proc is not None and not cryptography_mapped(daemon.proc.pid)
        finally:
            await daemon.stop()
