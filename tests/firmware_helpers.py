"""A real HTTP server on 127.0.0.1 serving release artefacts, and signing material for the tests."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

WHEEL = "ocpp_station-9.9.0-py3-none-any.whl"
ARTEFACT = b"PK\x03\x04 not really a wheel; the daemon never installs it itself " * 50


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class ArtefactServer:
    """Files by path (answer status, body); every GET is counted by path."""

    files: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)
    port: int = 0

    def url(self, path: str, *, userinfo: str = "") -> str:
        return f"http://{userinfo + '@' if userinfo else ''}127.0.0.1:{self.port}{path}"


@contextmanager
def artefact_server() -> Iterator[ArtefactServer]:
    state = ArtefactServer()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 — http.server's name
            path = self.path.split("?", 1)[0]
            state.hits[path] = state.hits.get(path, 0) + 1
            status, body = state.files.get(path, (404, b"not found"))
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    with http_in_thread(Handler) as port:
        state.port = port
        yield state


@contextmanager
def http_in_thread(handler: type[BaseHTTPRequestHandler], tls: ssl.SSLContext | None = None) -> Iterator[int]:
    """A real HTTP server on 127.0.0.1 (any free port) in a thread, HTTPS with `tls`; yields the port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@dataclass(frozen=True)
class Signer:
    """A throwaway ECDSA P-256 key with a self-signed firmware signing certificate."""

    key: ec.EllipticCurvePrivateKey
    certificate_pem: str

    def sign(self, data: bytes) -> str:
        return base64.b64encode(self.key.sign(data, ec.ECDSA(hashes.SHA256()))).decode()


def make_signer(*, expired: bool = False) -> Signer:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Orge firmware signing (test)")])
    now = dt.datetime.now(dt.UTC)
    start, end = (now - dt.timedelta(days=30), now - dt.timedelta(days=1)) if expired else (now - dt.timedelta(minutes=5), now + dt.timedelta(days=1))
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
        .sign(key, hashes.SHA256())
    )
    return Signer(key, cert.public_bytes(serialization.Encoding.PEM).decode())
