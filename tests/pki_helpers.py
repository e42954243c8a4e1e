"""Throwaway X.509 material for the security tests, made with `cryptography`: CAs, servers, stations."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Key = ec.EllipticCurvePrivateKey


def name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def key_pem(key: Key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def make_ca(common_name: str, *, issuer: tuple[Key, x509.Certificate] | None = None, days: float = 1,
            start: dt.datetime | None = None, ca: bool = True, key_cert_sign: bool = True,
            path_length: int | None = None) -> tuple[Key, x509.Certificate]:
    """A CA certificate: self-signed root, or an intermediate when `issuer` is given.

    `ca=False` or `key_cert_sign=False` make an issuer that must not issue (for the refusal tests)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = start or dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    signer_key, issuer_name = (issuer[0], issuer[1].subject) if issuer else (key, name(common_name))
    cert = (
        x509.CertificateBuilder().subject_name(name(common_name)).issuer_name(issuer_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), critical=True)
        .add_extension(x509.KeyUsage(not key_cert_sign, False, False, False, False, key_cert_sign, key_cert_sign, False,
                                     False),
                       critical=True)
        .sign(signer_key, hashes.SHA256())
    )
    return key, cert


def make_leaf(issuer: tuple[Key, x509.Certificate], common_name: str, *, server: bool = False,
              organization: str | None = None, key: Key | None = None, days: float = 1,
              start: dt.datetime | None = None, usage: x509.ObjectIdentifier | None = None,
              ) -> tuple[Key, x509.Certificate]:
    """An end-entity certificate: TLS client (default), TLS server, or `usage` (e.g. code signing)."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    now = start or dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    usage = usage or (ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH)
    builder = (
        x509.CertificateBuilder().subject_name(name(common_name, organization)).issuer_name(issuer[1].subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                        critical=False)
    return key, builder.sign(issuer[0], hashes.SHA256())


@dataclass
class TestPki:
    """A CSMS CA with a server certificate for 127.0.0.1 and a station client certificate, in files."""

    ca_key: Key
    ca_cert: x509.Certificate
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    __test__ = False

    def server_context(self, *, require_client_cert: bool) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.server_cert, self.server_key)
        if require_client_cert:
            context.load_verify_locations(self.ca)
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    @property
    def ca_pem(self) -> str:
        return pem(self.ca_cert)


def make_pki(directory: Path, station_id: str = "CP") -> TestPki:
    directory.mkdir(parents=True, exist_ok=True)
    ca = make_ca("Test CSMS CA")
    server_key, server_cert = make_leaf(ca, "127.0.0.1", server=True)
    client_key, client_cert = make_leaf(ca, station_id, organization="Test CPO")
    files = {}
    for file_name, data in (("ca.pem", pem(ca[1]).encode()), ("server.pem", pem(server_cert).encode()),
                            ("server.key", key_pem(server_key)), ("client.pem", pem(client_cert).encode()),
                            ("client.key", key_pem(client_key))):
        (directory / file_name).write_bytes(data)
        files[file_name] = directory / file_name
    return TestPki(ca[0], ca[1], files["ca.pem"], files["server.pem"], files["server.key"], files["client.pem"],
                   files["client.key"])


@dataclass(frozen=True)
class FirmwareSigner:
    """A manufacturer root and a firmware signing certificate it issued (directly, or through the
    intermediates that follow it in `certificate_pem`)."""

    root_pem: str
    key: Key
    certificate_pem: str

    def sign(self, data: bytes) -> str:
        return base64.b64encode(self.key.sign(data, ec.ECDSA(hashes.SHA256()))).decode()


FLAWS = ("ca-false-issuer", "tls-client-issuer", "no-key-cert-sign", "no-code-signing", "expired", "not-yet-valid", "path-length")
"""What `make_firmware_signer(flaw=...)` gets wrong; each one must make the signing certificate unusable."""


def make_firmware_signer(*, expired: bool = False, flaw: str | None = None,
                         root: tuple[Key, x509.Certificate] | None = None) -> FirmwareSigner:
    """A code-signing certificate under a manufacturer root (a new one unless `root` is given), or one
    with a single `flaw` (see FLAWS): an issuer that is no CA or may not sign certificates, a wrong
    extended key usage, dates, or an intermediate below a path-length-0 CA."""
    flaw = "expired" if expired else flaw
    assert flaw is None or flaw in FLAWS, flaw
    root = root or make_ca("Orge manufacturer root (test)", days=30)
    issuer, intermediates = root, []
    if flaw == "ca-false-issuer":
        issuer = make_ca("Orge not a CA", issuer=root, days=30, ca=False)
        intermediates = [issuer[1]]
    elif flaw == "tls-client-issuer":  # a station's TLS certificate the manufacturer issued, its key on the station
        issuer = make_leaf(root, "CP-1 (TLS client)")
        intermediates = [issuer[1]]
    elif flaw == "no-key-cert-sign":
        issuer = make_ca("Orge signing CA (no keyCertSign)", issuer=root, days=30, key_cert_sign=False)
        intermediates = [issuer[1]]
    elif flaw == "path-length":
        limited = make_ca("Orge CA (pathlen 0)", issuer=root, days=30, path_length=0)
        issuer = make_ca("Orge signing CA", issuer=limited, days=30)
        intermediates = [issuer[1], limited[1]]
    now = dt.datetime.now(dt.UTC)
    start = {"expired": now - dt.timedelta(days=30), "not-yet-valid": now + dt.timedelta(days=2)}.get(
        flaw or "", now - dt.timedelta(minutes=5))
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if flaw == "no-code-signing" else ExtendedKeyUsageOID.CODE_SIGNING
    key, cert = make_leaf(issuer, "Orge firmware signing (test)", start=start, days=29 if flaw == "expired" else 1,
                          usage=usage)
    return FirmwareSigner(pem(root[1]), key, "".join(pem(c) for c in [cert, *intermediates]))
