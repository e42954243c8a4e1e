"""AdditionalRootCertificateCheck (M05.FR.08-13): the CSMS root is replaced by a successor it signed,
the old one stays as fallback until the successor verified the CSMS. Real TLS on loopback."""

from __future__ import annotations

import ssl
from pathlib import Path

from station.devtools.csms import DevCsms
from tests.ocpp_helpers import Rig, eventually
from tests.pki_helpers import key_pem, make_ca, make_leaf, make_pki, pem

PASSWORD = "rollover-Passw0rd-12"


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


async def roots_listed(csms: DevCsms) -> list[str]:
    answer = await csms.call("CP", "GetInstalledCertificateIds", {"certificateType": ["CSMSRootCertificate"]})
    return sorted(c["certificateHashData"]["serialNumber"] for c in answer.get("certificateHashDataChain", []))


async def test_a_successor_root_replaces_the_old_one_once_it_verified_the_csms(tmp_path: Path) -> None:
    old = make_pki(tmp_path / "old")
    successor = make_ca("Test CSMS CA 2", issuer=(old.ca_key, old.ca_cert))  # signed by the root it replaces
    server_key, server_cert = make_leaf(successor, "127.0.0.1", server=True)
    (tmp_path / "new-server.pem").write_text(pem(server_cert))
    (tmp_path / "new-server.key").write_bytes(key_pem(server_key))
    csms = await DevCsms(ssl_context=old.server_context(require_client_cert=False), passwords={"CP": PASSWORD}).start()
    rig = Rig("201", csms, tmp_path / "station.db", state_dir=tmp_path / "state",
              link={"password": PASSWORD, "ca_bundle": old.ca}, credential_options={"additional_root_check": True})
    await rig.start()
    try:
        await csms.wait_for("StatusNotification", timeout=10)
        stranger = make_ca("Somebody else's root")[1]
        answer = await csms.call("CP", "InstallCertificate", {"certificateType": "CSMSRootCertificate", "certificate": pem(stranger)})
        assert answer["status"] == "Rejected"  # not signed by the installed root (M05.FR.10)
        answer = await csms.call("CP", "InstallCertificate", {"certificateType": "CSMSRootCertificate",
                                                              "certificate": pem(successor[1])})
        assert answer["status"] == "Accepted"
        both = sorted(format(c.serial_number, "x") for c in (old.ca_cert, successor[1]))
        assert await roots_listed(csms) == both  # the old one kept as fallback (M05.FR.11)
        port = csms.port
        await csms.stop()  # the CSMS moves to a server certificate of the new hierarchy
        csms = await DevCsms(port=port, ssl_context=server_context(tmp_path / "new-server.pem", tmp_path / "new-server.key"),
                             passwords={"CP": PASSWORD}).start()
        rig.csms = csms
        await csms.wait_for("StatusNotification", timeout=15)
        await eventually(lambda: not (tmp_path / "state" / "pki" / "roots" / ".fallback").exists())
        assert await roots_listed(csms) == [format(successor[1].serial_number, "x")]  # fallback gone (M05.FR.12)
        mark = csms.mark()
        await csms.disconnect("CP")  # the successor alone is enough (a trust anchor though not self-signed)
        await csms.wait_for("StatusNotification", since=mark, timeout=15)
        assert rig.client is not None and rig.client.core.device_model.value("SecurityCtrlr", "AdditionalRootCertificateCheck") is True
    finally:
        await rig.stop()
        await csms.stop()
