"""TLS security profiles 2 and 3 against the dev CSMS, with a throwaway CA made in the test."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from station.devtools.csms import DevCsms
from station.ocpp.connection import FailureKind, LinkParams, OcppLink
from tests.ocpp_helpers import booting_session, eventually
from tests.pki_helpers import TestPki, make_ca, make_pki, pem

FAST = {"backoff_min": 0.01, "backoff_max": 0.05, "open_timeout": 2}


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
    test_pki: TestPki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    made = make_pki(root)
    other = root / "other-ca.pem"
    other.write_text(pem(make_ca("Somebody else's CA")[1]))
    return Pki(made.ca, made.server_cert, made.server_key, made.client_cert, made.client_key, other, made)


def server_context(pki: Pki, *, require_client_cert: bool) -> ssl.SSLContext:
    return pki.test_pki.server_context(require_client_cert=require_client_cert)


@pytest.fixture
async def tasks() -> AsyncIterator[list[asyncio.Task[None]]]:
    running: list[asyncio.Task[None]] = []
    yield running
    for task in running:
        task.cancel()
    await asyncio.gather(*running, return_exceptions=True)


async def test_profile_2_connects_over_tls_with_ca_bundle_and_password(pki: Pki, tasks: list[asyncio.Task[None]]) -> None:
    async with DevCsms(ssl_context=server_context(pki, require_client_cert=False), passwords={"CP": "s3cret"}) as csms:
        link = OcppLink(LinkParams("CP", password="s3cret", url_201=csms.url("201"), ca_bundle=pki.ca, **FAST), booting_session("CP"))
        assert link.profile == 2
        tasks.append(asyncio.create_task(link.run()))
        await csms.wait_for("BootNotification", station_id="CP")
        assert link.state.url is not None and link.state.url.startswith("wss://")


async def test_profile_2_refuses_a_server_certificate_from_an_unknown_ca(pki: Pki, tasks: list[asyncio.Task[None]]) -> None:
    async with DevCsms(ssl_context=server_context(pki, require_client_cert=False), passwords={"CP": "s3cret"}) as csms:
        link = OcppLink(LinkParams("CP", password="s3cret", url_201=csms.url("201"), ca_bundle=pki.other_ca, **FAST), booting_session("CP"))
        tasks.append(asyncio.create_task(link.run()))
        await eventually(lambda: link.state.last_error_kind is FailureKind.TLS)
        assert csms.calls() == []


async def test_profile_3_connects_with_a_client_certificate(pki: Pki, tasks: list[asyncio.Task[None]]) -> None:
    async with DevCsms(ssl_context=server_context(pki, require_client_cert=True)) as csms:
        params = LinkParams("CP", url_201=csms.url("201"), ca_bundle=pki.ca, client_cert=pki.client_cert, client_key=pki.client_key, **FAST)
        link = OcppLink(params, booting_session("CP"))
        assert link.profile == 3
        tasks.append(asyncio.create_task(link.run()))
        await csms.wait_for("BootNotification", station_id="CP")


async def test_profile_3_server_refuses_a_station_without_client_certificate(pki: Pki, tasks: list[asyncio.Task[None]]) -> None:
    async with DevCsms(ssl_context=server_context(pki, require_client_cert=True)) as csms:
        link = OcppLink(LinkParams("CP", url_201=csms.url("201"), ca_bundle=pki.ca, **FAST), booting_session("CP"))
        tasks.append(asyncio.create_task(link.run()))
        await eventually(lambda: link.state.failed_attempts >= 2)
        assert not link.state.connected and csms.calls() == []


def test_with_a_provisioned_bundle_the_installed_roots_are_the_whole_trust(pki: Pki) -> None:
    from station.ocpp.connection import Attempt, ssl_context_for

    installed = pem(make_ca("Installed root")[1])
    context = ssl_context_for(Attempt(2, ca_bundle=str(pki.ca), cadata=installed))
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "Installed root"),),)]


def test_without_a_bundle_installed_roots_add_to_the_system_trust(pki: Pki) -> None:
    from station.ocpp.connection import Attempt, ssl_context_for

    installed = pem(make_ca("Installed root")[1])
    bare = ssl_context_for(Attempt(2))
    context = ssl_context_for(Attempt(2, cadata=installed))
    assert context.cert_store_stats()["x509_ca"] == bare.cert_store_stats()["x509_ca"] + 1
