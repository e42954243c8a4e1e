"""TLS failures with the CSMS become security events (real TLS on loopback, throwaway CA)."""

from __future__ import annotations

import asyncio
import ssl
import warnings
from pathlib import Path

import pytest

from station.core.clock import Clock
from station.core.station import StationCore
from station.core.store import Store
from station.devtools.csms import DevCsms
from station.ocpp.client import OcppClient
from station.ocpp.connection import FailureKind, LinkParams, OcppLink
from tests.ocpp_helpers import booting_session, eventually
from tests.test_ocpp_security import Pki, pki, server_context, tasks  # noqa: F401 — the CA and task fixtures

FAST = {"backoff_min": 0.01, "backoff_max": 0.05, "open_timeout": 2}


def weak_server(pki: Pki, *, old_version: bool = False, weak_cipher: bool = False) -> ssl.SSLContext:
    context = server_context(pki, require_client_cert=False)
    if old_version:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = ssl.TLSVersion.TLSv1
            context.maximum_version = ssl.TLSVersion.TLSv1_1
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
    if weak_cipher:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers("ECDHE-ECDSA-AES128-SHA")  # CBC with SHA-1: not offered by the station
    return context


async def events_of_link(csms: DevCsms, params: LinkParams, tasks: list[asyncio.Task[None]]) -> tuple[OcppLink, list[tuple[str, str]]]:
    raised: list[tuple[str, str]] = []
    link = OcppLink(params, booting_session("CP"), on_security_event=lambda kind, info: raised.append((kind, info)))
    tasks.append(asyncio.create_task(link.run()))
    await eventually(lambda: link.state.failed_attempts >= 5)
    return link, raised


async def test_an_unknown_csms_certificate_raises_one_invalid_csms_certificate_per_outage(pki: Pki, tasks: list[asyncio.Task[None]]) -> None:
    async with DevCsms(ssl_context=server_context(pki, require_client_cert=False), passwords={"CP": "pw"}) as csms:
        params = LinkParams("CP", password="pw", url_201=csms.url("201"), ca_bundle=pki.other_ca, **FAST)
        link, raised = await events_of_link(csms, params, tasks)
        assert link.state.last_error_kind is FailureKind.TLS
        assert [kind for kind, _ in raised] == ["InvalidCsmsCertificate"]
        assert "pw" not in raised[0][1] and raised[0][1].startswith("wss://127.0.0.1:")


async def test_a_csms_offering_only_tls_1_1_raises_invalid_tls_version(pki: Pki, tasks: list[asyncio.Task[None]]) -> None:
    async with DevCsms(ssl_context=weak_server(pki, old_version=True), passwords={"CP": "pw"}) as csms:
        params = LinkParams("CP", password="pw", url_201=csms.url("201"), ca_bundle=pki.ca, **FAST)
        link, raised = await events_of_link(csms, params, tasks)
        assert [kind for kind, _ in raised] == ["InvalidTLSVersion"]
        assert "TLSv1.1" in raised[0][1] and csms.calls() == []


async def test_a_csms_offering_only_a_weak_cipher_suite_raises_invalid_tls_cipher_suite(pki: Pki, tasks: list[asyncio.Task[None]]) -> None:
    async with DevCsms(ssl_context=weak_server(pki, weak_cipher=True), passwords={"CP": "pw"}) as csms:
        params = LinkParams("CP", password="pw", url_201=csms.url("201"), ca_bundle=pki.ca, **FAST)
        link, raised = await events_of_link(csms, params, tasks)
        assert [kind for kind, _ in raised] == ["InvalidTLSCipherSuite"]
        assert "ECDHE-ECDSA-AES128-SHA" in raised[0][1] and csms.calls() == []


async def test_a_csms_refusing_the_connection_for_other_reasons_raises_nothing(pki: Pki, tasks: list[asyncio.Task[None]]) -> None:
    async with DevCsms(ssl_context=server_context(pki, require_client_cert=True)) as csms:
        params = LinkParams("CP", url_201=csms.url("201"), ca_bundle=pki.ca, security_profile=2, password="pw", **FAST)
        _, raised = await events_of_link(csms, params, tasks)
        assert raised == []  # no client certificate: the CSMS refuses us, its TLS is fine


@pytest.mark.parametrize("version", ["201", "16"])
async def test_an_invalid_csms_certificate_reaches_the_csms_once_the_station_trusts_it_again(
    version: str, pki: Pki, tmp_path: Path
) -> None:
    async with DevCsms(ssl_context=server_context(pki, require_client_cert=False), passwords={"CP": "pw"}) as csms:
        store = Store(tmp_path / "station.db")
        core = StationCore(store=store, clock=Clock(trusted=True))

        def client(ca: Path) -> OcppClient:
            params = LinkParams("CP", password="pw", primary=version, url_201=csms.url("201"), url_16=csms.url("16"),
                                ca_bundle=ca, **FAST)
            return OcppClient(params, core, boot_retry_seconds=0.05, response_timeout=3)

        wrong = client(pki.other_ca)
        task = asyncio.create_task(wrong.run())
        await eventually(lambda: wrong.link.state.failed_attempts >= 3)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert csms.calls() == []
        right = client(pki.ca)  # the operator installs the right root: the queued event goes out
        task = asyncio.create_task(right.run())
        try:
            event = await csms.wait_for("SecurityEventNotification", "CP", timeout=10)
            assert event.payload["type"] == ("InvalidCsmsCertificate" if version == "201" else "InvalidCentralSystemCertificate")
            assert event.version == version
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await core.close()
            store.close()
