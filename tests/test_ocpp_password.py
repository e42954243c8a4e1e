"""A01: the CSMS changes the basic-auth password, over real TLS (security profile 2) on loopback."""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from station.devtools.csms import DevCsms
from tests.ocpp_helpers import Rig, started_rig
from tests.pki_helpers import TestPki, make_pki

OLD = "old-Passw0rd-1234567"
NEW = "new-Passw0rd-7654321"


@pytest.fixture(scope="module")
def test_pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
async def csms(test_pki: TestPki) -> AsyncIterator[DevCsms]:
    async with DevCsms(ssl_context=test_pki.server_context(require_client_cert=False), passwords={"CP": OLD}) as server:
        yield server


async def started(version: str, csms: DevCsms, test_pki: TestPki, tmp_path: Path) -> Rig:
    return await started_rig(version, csms, tmp_path, password=OLD, ca_bundle=test_pki.ca)


async def set_password(rig: Rig, value: str) -> str:
    if rig.version == "201":
        answer = await rig.csms.call("CP", "SetVariables", {"setVariableData": [{
            "component": {"name": "SecurityCtrlr"}, "variable": {"name": "BasicAuthPassword"}, "attributeValue": value}]})
        return str(answer["setVariableResult"][0]["attributeStatus"])
    answer = await rig.csms.call("CP", "ChangeConfiguration", {"key": "AuthorizationKey", "value": value.encode().hex()})
    return str(answer["status"])


@pytest.mark.parametrize("version", ["201", "16"])
async def test_the_station_reconnects_with_the_new_password(version: str, csms: DevCsms, test_pki: TestPki, tmp_path: Path) -> None:
    rig = await started(version, csms, test_pki, tmp_path)
    try:
        csms.passwords["CP"] = NEW  # the CSMS switches when the station says Accepted (A01.FR.03)
        mark = csms.mark()
        assert await set_password(rig, NEW) == "Accepted"
        await csms.wait_for("StatusNotification", since=mark, timeout=10)  # a new connection
        assert csms.auth_failures == []
        state = tmp_path / "state" / "pki" / "credentials.json"
        assert stat.S_IMODE(os.stat(state).st_mode) == 0o600
        assert NEW not in state.read_text()  # kept as hex, never as the plain text a grep would find
    finally:
        await rig.stop()
    rig = Rig(version, csms, tmp_path / "station.db", state_dir=tmp_path / "state", link={"password": OLD, "ca_bundle": test_pki.ca})
    mark = csms.mark()
    await rig.start()  # after a restart the new password is still the one in force
    try:
        await csms.wait_for("StatusNotification", since=mark, timeout=10)
        assert csms.auth_failures == []
    finally:
        await rig.stop()


@pytest.mark.parametrize("version", ["201", "16"])
async def test_a_refused_new_password_falls_back_to_the_old_one_and_is_reported(
        version: str, csms: DevCsms, test_pki: TestPki, tmp_path: Path) -> None:
    rig = await started(version, csms, test_pki, tmp_path)
    try:
        mark = csms.mark()
        assert await set_password(rig, NEW) == "Accepted"  # but the CSMS keeps the old password
        event = await csms.wait_for("SecurityEventNotification", since=mark, timeout=10,
                                    predicate=lambda r: "Authenticat" in r.payload["type"])
        expected = "FailedToAuthenticateAtCsms" if version == "201" else "FailedToAuthenticationAtCentralSystem"
        assert event.payload["type"] == expected
        assert csms.auth_failures == ["CP"]  # one refused attempt with the new password, then the old one again
        assert rig.client is not None and rig.client.session is not None and rig.client.session.accepted
    finally:
        await rig.stop()


async def test_the_password_is_never_read_back(csms: DevCsms, test_pki: TestPki, tmp_path: Path) -> None:
    rig = await started("201", csms, test_pki, tmp_path)
    try:
        answer = await csms.call("CP", "GetVariables", {"getVariableData": [
            {"component": {"name": "SecurityCtrlr"}, "variable": {"name": "BasicAuthPassword"}}]})
        assert answer["getVariableResult"][0]["attributeStatus"] == "Rejected"
        assert "attributeValue" not in answer["getVariableResult"][0]
    finally:
        await rig.stop()


async def test_the_authorization_key_is_not_listed_in_the_configuration(csms: DevCsms, test_pki: TestPki, tmp_path: Path) -> None:
    rig = await started("16", csms, test_pki, tmp_path)
    try:
        listed = await csms.call("CP", "GetConfiguration", {})
        assert "AuthorizationKey" not in {k["key"] for k in listed["configurationKey"]}
        asked = await csms.call("CP", "GetConfiguration", {"key": ["AuthorizationKey"]})
        assert asked == {"configurationKey": [], "unknownKey": ["AuthorizationKey"]}
    finally:
        await rig.stop()


@pytest.mark.parametrize(("version", "value"), [("201", "short-pw"), ("201", "spaces are not allowed here"),
                                                ("16", "not-hex-at-all-but-long-enough-000")])
async def test_a_malformed_password_is_rejected_and_changes_nothing(
        version: str, value: str, csms: DevCsms, test_pki: TestPki, tmp_path: Path) -> None:
    rig = await started(version, csms, test_pki, tmp_path)
    try:
        if version == "201":
            status = await set_password(rig, value)
        else:
            status = (await csms.call("CP", "ChangeConfiguration", {"key": "AuthorizationKey", "value": value}))["status"]
        assert status == "Rejected"
        assert rig.credentials is not None and "password_candidate" not in rig.credentials._state
    finally:
        await rig.stop()
