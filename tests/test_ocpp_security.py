"""TLS security profiles 2 and 3 against the dev CSMS, with a throwaway CA made in the test."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from station.devtools.csms import DevCsms
from station.ocpp.connection import FailureKind, LinkParams, OcppLink
from tests.ocpp_helpers import booting_session, eventually

FAST = {"backoff_min": 0.01, "backoff_max": 0.05, "open_timeout": 2}


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return path


def _write_cert(cert: x509.Certificate, path: Path) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _ca(name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf(ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, name: str, *, server: bool) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    )
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    ca_key, ca_cert = _ca("Test CSMS CA")
    server_key, server_cert = _leaf(ca_key, ca_cert, "127.0.0.1", server=True)
    client_key, client_cert = _leaf(ca_key, ca_cert, "CP", server=False)
    _, other_cert = _ca("Somebody else's CA")
    return Pki(
        ca=_write_cert(ca_cert, root / "ca.pem"),
        server_cert=_write_cert(server_cert, root / "server.pem"),
        server_key=_write_key(server_key, root / "server.key"),
        client_cert=_write_cert(client_cert, root / "client.pem"),
        client_key=_write_key(client_key, root / "client.key"),
        other_ca=_write_cert(other_cert, root / "other-ca.pem"),
    )


def server_context(pki: Pki, *, require_client_cert: bool) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    if require_client_cert:
        context.load_verify_locations(pki.ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


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
