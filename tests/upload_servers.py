"""Real upload servers on 127.0.0.1 for the log-upload tests: HTTP (PUT and multipart POST) and FTP
(pyftpdlib), each in a thread, each recording what arrived."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from tests.firmware_helpers import http_in_thread


@dataclass
class UploadServer:
    """Bodies received by path; ``answers`` (path → list of statuses) are used up first, then 201.

    ``delay_s`` (path → seconds) holds the answer back (an upload still running);
    ``put_status`` answers every PUT with that status (405: the client must POST instead);
    ``credentials`` ("user:password") makes every request without them get 401.
    """

    received: dict[str, bytes] = field(default_factory=dict)
    methods: list[tuple[str, str]] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)
    """The Host header of every request."""
    answers: dict[str, list[int]] = field(default_factory=dict)
    delay_s: dict[str, float] = field(default_factory=dict)
    put_status: int | None = None
    credentials: str | None = None
    port: int = 0

    scheme: str = "http"

    def url(self, path: str, *, userinfo: str = "") -> str:
        return f"{self.scheme}://{userinfo + '@' if userinfo else ''}127.0.0.1:{self.port}{path}"

    def hits(self, path: str) -> int:
        return sum(1 for _, p in self.methods if p == path)


@contextmanager
def http_upload_server(tls: ssl.SSLContext | None = None) -> Iterator[UploadServer]:
    import base64

    state = UploadServer(scheme="https" if tls is not None else "http")

    class Handler(BaseHTTPRequestHandler):
        def _handle(self, method: str) -> None:
            path = self.path.split("?", 1)[0]
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            state.methods.append((method, path))
            state.hosts.append(self.headers.get("Host", ""))
            time.sleep(state.delay_s.get(path, 0.0))
            status = 201
            if state.credentials is not None:
                expected = "Basic " + base64.b64encode(state.credentials.encode()).decode()
                if self.headers.get("Authorization") != expected:
                    status = 401
            if status == 201 and method == "PUT" and state.put_status is not None:
                status = state.put_status
            if status == 201 and state.answers.get(path):
                status = state.answers[path].pop(0)
            if status == 201:
                state.received[path] = body if method == "PUT" else _multipart_file(self.headers, body)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_PUT(self) -> None:  # noqa: N802 — http.server's name
            self._handle("PUT")

        def do_POST(self) -> None:  # noqa: N802
            self._handle("POST")

        def log_message(self, *args: object) -> None:
            pass

    with http_in_thread(Handler, tls) as port:
        state.port = port
        yield state


def _multipart_file(headers: object, body: bytes) -> bytes:
    """The content of the form field ``file`` of a multipart/form-data body."""
    from email.parser import BytesParser
    from email.policy import HTTP

    content_type = headers.get("Content-Type", "")  # type: ignore[attr-defined]
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == "file":
            return part.get_payload(decode=True) or b""
    return b""


@dataclass
class FtpServer:
    root: Path
    user: str
    password: str
    port: int = 0
    scheme: str = "ftp"

    def url(self, path: str = "/", *, userinfo: str | None = None) -> str:
        who = userinfo if userinfo is not None else f"{self.user}:{self.password}"
        return f"{self.scheme}://{who + '@' if who else ''}127.0.0.1:{self.port}{path}"

    def files(self) -> dict[str, bytes]:
        return {str(p.relative_to(self.root)): p.read_bytes() for p in self.root.rglob("*") if p.is_file()}


@contextmanager
def ftp_upload_server(root: Path, *, user: str = "logs", password: str = "ftp-pass",
                      tls: tuple[Path, Path] | None = None) -> Iterator[FtpServer]:
    """FTP, or with `tls` (certificate, key) explicit FTPS that requires TLS on control and data."""
    import logging

    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import FTPHandler, TLS_FTPHandler
    from pyftpdlib.servers import ThreadedFTPServer

    logging.getLogger("pyftpdlib").setLevel(logging.WARNING)
    root.mkdir(parents=True, exist_ok=True)
    (root / "incoming").mkdir(exist_ok=True)
    authorizer = DummyAuthorizer()
    authorizer.add_user(user, password, str(root), perm="elradfmw")

    class Handler(TLS_FTPHandler if tls else FTPHandler):  # type: ignore[misc, valid-type]
        pass

    if tls is not None:
        Handler.certfile, Handler.keyfile = str(tls[0]), str(tls[1])
        Handler.tls_control_required = Handler.tls_data_required = True
    Handler.authorizer = authorizer
    Handler.passive_ports = None
    server = ThreadedFTPServer(("127.0.0.1", 0), Handler)
    state = FtpServer(root, user, password, server.socket.getsockname()[1], "ftps" if tls else "ftp")
    thread = threading.Thread(target=server.serve_forever, kwargs={"timeout": 0.2}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.close_all()
        thread.join(5)
