"""Upload one file to the location a CSMS gave (GetLog remoteLocation, GetDiagnostics location).

Where the file goes:

- ``http(s)://`` — a location ending in ``/`` is a directory: the file name is appended;
  otherwise the location is the upload URL itself (a pre-signed URL keeps its query). The file
  is sent with ``PUT`` (what ``curl -T`` does, and what object stores and most CSMS upload
  endpoints take); a server that answers 405 Method Not Allowed gets a ``POST``
  multipart/form-data with the file in the field ``file`` (form-upload endpoints). User info in
  the URL becomes HTTP basic authentication. httpx is imported here, when an upload runs.
- ``ftp://`` / ``ftps://`` (explicit TLS, protected data channel) — passive mode; the path is a
  directory (``CWD`` into it) unless its last segment ends in ``.tar.gz``, ``.tgz`` or ``.zip``,
  which is then the file name; user info is the login (anonymous without). ftplib blocks, so it
  runs in a worker thread; a cancelled upload closes its control socket so the thread ends.

Where the connection goes: the host is resolved once and every address checked
(:func:`resolve_target`); the upload then connects to those addresses and never resolves the name
again, so a name that resolves elsewhere after its check (DNS rebinding) cannot steer the upload to
the station itself. The name still does the rest: HTTP ``Host`` header, TLS SNI and the server
certificate's name (HTTPS and FTPS control and data channels).

Failures raise :class:`UploadError` with the status the CSMS should get: ``PermissionDenied``
(HTTP 401/403, FTP 530), ``NotSupportedOperation`` (HTTP 405/501 after POST, FTP 502/504),
``BadMessage`` (HTTP 400, FTP 500/501) or ``UploadFailure`` (everything else). Messages never
hold the URL's user info or query.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from station.diagnostics.archive import public_location

if TYPE_CHECKING:
    import ftplib

SCHEMES = frozenset({"http", "https", "ftp", "ftps"})
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".zip")
DEFAULT_TIMEOUT_S = 60.0


class UploadError(Exception):
    def __init__(self, status: str, detail: str, *, retry: bool = True) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.retry = retry
        """False when another attempt cannot go better (the location itself is unusable)."""


def check_location(location: str) -> str | None:
    """Why a location cannot be used (None: it can)."""
    try:
        parts = urlsplit(location)
        parts.port  # noqa: B018 — raises ValueError on a bad port
    except ValueError:
        return "location is not a URL"
    if parts.scheme.lower() not in SCHEMES:
        return f"unsupported protocol {parts.scheme or '(none)'!r}: use http, https, ftp or ftps"
    if not parts.hostname:
        return "location has no host"
    return None


def forbidden_address(address: str) -> str | None:
    """Why an upload may not go to `address` (None: it may): loopback, link-local, unspecified, or
    one of the station's own addresses (one it can bind to: the local API, the flight recorder's
    host...). A CSMS must not use GetLog to probe or reach the station itself (issue 21)."""
    import ipaddress

    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return f"{address!r} is not an address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return f"{ip} is a loopback address"
    if ip.is_link_local:
        return f"{ip} is a link-local address"
    if ip.is_unspecified:
        return f"{ip} is the unspecified address"
    if ip.is_multicast:  # also bindable, but not the station's own: say what it is
        return f"{ip} is a multicast address"
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((str(ip), 0))  # only an address of this host can be bound
        except OSError:
            return None
    return f"{ip} is one of the station's own addresses"


async def _resolve(host: str, timeout: float) -> list[str]:
    async with asyncio.timeout(timeout):
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _refusal(host: str, addresses: Sequence[str]) -> str | None:
    for address in addresses:
        why = forbidden_address(address)
        if why:
            return f"upload target {host!r} refused: {why}"
    return None


async def target_refusal(location: str, *, timeout: float = 10.0) -> str | None:
    """Why the location's host may not receive an upload (None: it may). The name is resolved
    first; every address it resolves to must be allowed. A name that does not resolve now is not
    refused here: the upload fails (and is retried) like any unreachable host."""
    host = urlsplit(location).hostname or ""
    try:
        addresses = await _resolve(host, timeout)
    except (OSError, TimeoutError, UnicodeError):
        return None
    return _refusal(host, addresses)


async def resolve_target(location: str, *, allow_local: bool = False, timeout: float = 10.0) -> tuple[str, ...]:
    """The addresses an upload to `location` connects to, in the resolver's order: the host resolved
    once and, unless `allow_local`, every address checked (:func:`forbidden_address`). Pass them to
    :func:`upload`. Raises UploadError: UploadFailure when the name does not resolve or is refused."""
    host = urlsplit(location).hostname or ""
    try:
        addresses = await _resolve(host, timeout)
    except (OSError, TimeoutError, UnicodeError) as exc:
        raise UploadError("UploadFailure", f"{host!r} does not resolve: {_describe(exc, location)}") from None
    refused = None if allow_local else _refusal(host, addresses)
    if refused:
        raise UploadError("UploadFailure", refused)
    if not addresses:
        raise UploadError("UploadFailure", f"{host!r} does not resolve")
    return tuple(addresses)


def _netloc(host: str, port: int | None) -> str:
    return (f"[{host}]" if ":" in host else host) + (f":{port}" if port else "")


def target_url(location: str, filename: str, *, address: str | None = None) -> str:
    """The HTTP URL the file is sent to (see the module docstring); with `address`, the same URL
    naming that address instead of the host (what the connection uses)."""
    parts = urlsplit(location)
    path = parts.path or "/"
    if path.endswith("/"):
        path += filename
    host = address.replace("%", "%25") if address else parts.hostname or ""
    return urlunsplit((parts.scheme, _netloc(host, parts.port), path, parts.query, ""))


async def upload(path: Path, location: str, *, addresses: Sequence[str] | None = None,
                 timeout: float = DEFAULT_TIMEOUT_S, ca_bundle: str | None = None) -> str:
    """Upload ``path``; returns where it went (public form). Raises UploadError.

    `addresses`: where to connect, tried in order while a connection cannot be opened (the checked
    answer of :func:`resolve_target`); without them the host is resolved here, unchecked."""
    problem = check_location(location)
    if problem:
        raise UploadError("BadMessage", problem, retry=False)
    if addresses is None:
        addresses = await resolve_target(location, allow_local=True, timeout=timeout)
    scheme = urlsplit(location).scheme.lower()
    if scheme in ("http", "https"):
        return await _http(path, location, addresses, timeout, ca_bundle)
    return await _ftp(path, location, addresses, timeout, ca_bundle)


def _describe(exc: BaseException, location: str) -> str:
    text = str(exc)
    parts = urlsplit(location)
    for secret in (parts.password, parts.username, parts.query):
        if secret:
            text = text.replace(secret, "***")
            text = text.replace(unquote(secret), "***")
    text = f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__
    return text[:300]


# ------------------------------------------------------------------------------------- HTTP
async def _chunks(path: Path, size: int = 65536) -> Any:
    """The file in blocks: an archive is never held in memory whole."""
    with path.open("rb") as handle:
        while block := handle.read(size):
            yield block


async def _http(path: Path, location: str, addresses: Sequence[str], timeout: float, ca_bundle: str | None) -> str:
    import httpx

    parts = urlsplit(location)
    shown = public_location(target_url(location, path.name))
    auth = (unquote(parts.username), unquote(parts.password or "")) if parts.username else None
    verify: Any = ssl.create_default_context(cafile=ca_bundle) if ca_bundle else True
    host = _netloc(parts.hostname or "", parts.port)  # the name, for the Host header and TLS
    extensions = {"sni_hostname": parts.hostname} if parts.scheme.lower() == "https" else {}
    try:
        async with httpx.AsyncClient(timeout=timeout, verify=verify, follow_redirects=False) as client:
            for index, address in enumerate(addresses):
                url = target_url(location, path.name, address=address)
                try:
                    response = await client.put(url, content=_chunks(path), auth=auth, extensions=extensions, headers={
                        "Host": host, "Content-Type": "application/gzip",
                        "Content-Length": str(path.stat().st_size)})  # no chunked upload: object stores
                    # (pre-signed PUT) refuse it
                except (httpx.ConnectError, httpx.ConnectTimeout):
                    if index + 1 < len(addresses):
                        continue  # the next address of the name
                    raise
                if response.status_code == 405:
                    with path.open("rb") as handle:
                        response = await client.post(url, auth=auth, extensions=extensions, headers={"Host": host},
                                                     files={"file": (path.name, handle, "application/gzip")})
                break
    except httpx.HTTPError as exc:
        raise UploadError("UploadFailure", _describe(exc, location)) from None
    except OSError as exc:
        raise UploadError("UploadFailure", _describe(exc, location)) from None
    code = response.status_code
    if 200 <= code < 300:
        return shown
    if code in (401, 403):
        raise UploadError("PermissionDenied", f"HTTP {code} from {shown}")
    if code in (405, 501):
        raise UploadError("NotSupportedOperation", f"HTTP {code} from {shown}: neither PUT nor POST accepted")
    if code == 400:
        raise UploadError("BadMessage", f"HTTP 400 from {shown}")
    raise UploadError("UploadFailure", f"HTTP {code} from {shown}")


# -------------------------------------------------------------------------------------- FTP
def _ftp_status(exc: ftplib.Error) -> str:
    code = str(exc)[:3]
    if code == "530":
        return "PermissionDenied"
    if code in ("502", "504"):
        return "NotSupportedOperation"
    if code in ("500", "501"):
        return "BadMessage"
    return "UploadFailure"


def _ftp_blocking(path: Path, location: str, addresses: Sequence[str], timeout: float, ca_bundle: str | None,
                  holder: list[Any]) -> str:
    import ftplib

    parts = urlsplit(location)
    secure = parts.scheme.lower() == "ftps"
    host, port = parts.hostname or "", parts.port or 21
    user = unquote(parts.username) if parts.username else "anonymous"
    password = unquote(parts.password or "") if parts.username else "anonymous@"
    segments = [unquote(s) for s in parts.path.split("/") if s]
    name = path.name
    if segments and segments[-1].endswith(ARCHIVE_SUFFIXES):
        name = segments.pop()
    ftp: ftplib.FTP
    if secure:
        context = ssl.create_default_context(cafile=ca_bundle)
        ftp = ftplib.FTP_TLS(context=context, timeout=timeout)
    else:
        ftp = ftplib.FTP(timeout=timeout)
    holder.append(ftp)
    try:
        for index, address in enumerate(addresses):
            try:
                ftp.connect(address, port)
                break
            except OSError:
                if index + 1 == len(addresses):
                    raise
        ftp.host = host  # TLS (control and, through it, data) verifies the name; data goes to the
        # control connection's peer (ftplib ignores the address in a PASV answer)
        ftp.login(user, password)
        if isinstance(ftp, ftplib.FTP_TLS):
            ftp.prot_p()
        ftp.set_pasv(True)
        for segment in segments:
            ftp.cwd(segment)
        with path.open("rb") as handle:
            ftp.storbinary(f"STOR {name}", handle)
        try:
            ftp.quit()
        except (ftplib.Error, OSError):
            pass
    finally:
        ftp.close()
    shown_path = "/" + "/".join([*segments, name])
    return urlunsplit((parts.scheme, f"{host}:{port}", shown_path, "", ""))


async def _ftp(path: Path, location: str, addresses: Sequence[str], timeout: float, ca_bundle: str | None) -> str:
    import ftplib

    holder: list[Any] = []
    try:
        return await asyncio.to_thread(_ftp_blocking, path, location, addresses, timeout, ca_bundle, holder)
    except asyncio.CancelledError:
        for ftp in holder:  # the thread's control-socket calls fail at once and the thread ends
            sock = getattr(ftp, "sock", None)
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        raise
    except ftplib.Error as exc:
        raise UploadError(_ftp_status(exc), _describe(exc, location)) from None
    except (OSError, EOFError) as exc:
        raise UploadError("UploadFailure", _describe(exc, location)) from None
    except ValueError as exc:  # ftplib refuses a command holding CR/LF (a path with %0d%0a)
        raise UploadError("BadMessage", _describe(exc, location), retry=False) from None
