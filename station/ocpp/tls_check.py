"""Why a TLS handshake with the CSMS failed, in OCPP security-event terms.

A certificate that does not verify names itself (`ssl.SSLCertVerificationError`). A server
that only speaks TLS < 1.2 or only weak cipher suites often does not: Python's own TLS
servers reset the connection, others send a bare handshake_failure alert. To tell the operator
*what* the CSMS insists on, the station then makes one diagnostic handshake that accepts
anything (every version OpenSSL still has, every cipher, no certificate check), reads what
the server picked and hangs up before sending a byte. The result is never used for traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
import warnings

VERSION_REASONS = ("UNSUPPORTED_PROTOCOL", "PROTOCOL_VERSION", "VERSION_TOO_LOW", "NO_PROTOCOLS_AVAILABLE")
MODERN = ("TLSv1.2", "TLSv1.3")


def classify(exc: BaseException) -> str | None:
    """The event a handshake error names by itself; None: diagnose."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "InvalidCsmsCertificate"
    if isinstance(exc, ssl.SSLError) and any(key in (exc.reason or "").upper() for key in VERSION_REASONS):
        return "InvalidTLSVersion"
    return None


@functools.cache
def allowed_ciphers() -> frozenset[str]:
    """The cipher suites the station's TLS context offers (OpenSSL names)."""
    return frozenset(c["name"] for c in ssl.create_default_context().get_ciphers())


def _permissive_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    with contextlib.suppress(ssl.SSLError):
        context.set_ciphers("ALL:@SECLEVEL=0")
    return context


async def diagnose(host: str, port: int, *, timeout: float = 5.0) -> tuple[str, str] | None:
    """(event type, detail) when the server negotiates a version or cipher the station refuses."""
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port, ssl=_permissive_context(), server_hostname=host)
    except (OSError, TimeoutError, ssl.SSLError):
        return None
    try:
        tls = writer.get_extra_info("ssl_object")
        version = tls.version() if tls is not None else None
        cipher = tls.cipher()[0] if tls is not None and tls.cipher() else None
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    if version and version not in MODERN:
        return "InvalidTLSVersion", f"CSMS offers only {version} (station requires TLS 1.2 or newer)"
    if cipher and cipher not in allowed_ciphers():
        return "InvalidTLSCipherSuite", f"CSMS offers only cipher suite {cipher} ({version})"
    return None
