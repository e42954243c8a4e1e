"""End to end (A05 through a network profile, OCTT TC_A_19): the real daemon on security profile 2
is given a profile-3 network profile for the same CSMS, first in NetworkConfigurationPriority;
after the Reset it connects with its client certificate, keeps profile 3, and refuses profile 2."""

from __future__ import annotations

import ssl
from pathlib import Path

from station.devtools.csms import DevCsms
from tests.e2e import STATION_ID, DaemonProcess, station_env
from tests.pki_helpers import make_pki
from tests.test_e2e_network_profiles import network_profile, priority, restart_after_reset

PASSWORD = "e2e-profile-Passw0rd-1"


async def test_a_profile_3_network_profile_raises_the_security_profile_after_the_reset(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki", station_id=STATION_ID)
    context = pki.server_context(require_client_cert=False)
    context.load_verify_locations(pki.ca)
    context.verify_mode = ssl.CERT_OPTIONAL  # profile 2 (password) and profile 3 (certificate) both accepted
    async with DevCsms(ssl_context=context, heartbeat_interval=30) as csms:
        env = station_env(tmp_path, csms, tmp_path / "no-esp32", OCPP_STATION_PASSWORD=PASSWORD,
                          STATION_SECURITY_PROFILE="2", STATION_CA_BUNDLE=str(pki.ca),
                          STATION_CLIENT_CERT=str(pki.client_cert), STATION_CLIENT_KEY=str(pki.client_key))
        env.pop("OCPP_16_URL")
        daemon = await DaemonProcess(env, tmp_path / "station.log").start()
        try:
            await csms.wait_for("BootNotification", STATION_ID, timeout=20)
            assert csms.peer_certificates[STATION_ID] is None  # profile 2: no client certificate
            stored = await csms.call(STATION_ID, "SetNetworkProfile",
                                     network_profile(csms.url("201"), securityProfile=3))
            assert stored == {"status": "Accepted"}
            ordered = await csms.call(STATION_ID, "SetVariables", priority("1,0"))
            assert ordered["setVariableResult"][0]["attributeStatus"] in ("Accepted", "RebootRequired")
            mark = csms.mark()
            daemon = await restart_after_reset(csms, daemon, tmp_path / "station-2.log")
            await csms.wait_for("BootNotification", STATION_ID, since=mark, timeout=20)
            assert csms.peer_certificates[STATION_ID] is not None  # profile 3: the client certificate
            event = await csms.wait_for("SecurityEventNotification", STATION_ID, since=mark, timeout=20,
                                        predicate=lambda r: "profile 3 in use" in r.payload.get("techInfo", ""))
            assert event.payload["type"] == "ReconfigurationOfSecurityParameters"
            answer = await csms.call(STATION_ID, "GetVariables", {"getVariableData": [
                {"component": {"name": "SecurityCtrlr"}, "variable": {"name": "SecurityProfile"}}]})
            assert answer["getVariableResult"][0]["attributeValue"] == "3"
            lower = await csms.call(STATION_ID, "SetNetworkProfile", network_profile(csms.url("201"), slot=2, securityProfile=2))
            assert lower["status"] == "Rejected"  # never back down (A05.FR.09)
        finally:
            await daemon.stop()
