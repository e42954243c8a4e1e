"""The CSMS connection manager: which URL, which OCPP version, which credentials, and when to retry.

It knows nothing about message content: it opens a WebSocket, hands it to the session callback
and, when the session ends or the link dies, reconnects. Decisions it owns:

- URL rule: a URL is used as given; only a URL ending in "/" gets the station id appended
  (field URLs already end with the station id).
- Version policy (issue 22): the version last accepted on this CSMS endpoint (`start_version`,
  remembered durably by the client) is offered first, else the primary. Only a protocol answer
  switches versions: the endpoint refuses the subprotocol or the upgrade (HTTP 4xx other than
  401/403, or no subprotocol chosen), or a BootNotification is refused as not supported
  (`VersionRefused`). A refused connection, a timeout, DNS or TLS failures, a 5xx or a
  connection closed before any HTTP answer say nothing about the versions a CSMS speaks: the
  same version is retried with backoff, however long the outage lasts. The version that
  worked after a switch is preferred for `primary_retry_seconds`, then the primary is probed
  again from a working connection (closed cleanly for the probe; one failed probe returns to
  the fallback at once; no probes during an outage). Authentication failures never switch.
- Unfinished work (`needs`): a version with open transactions or queued messages bound to it is
  not left voluntarily (no primary probe); a version whose bound messages wait is returned to
  (a probe, every `version_return_seconds`) once the current one has nothing left to finish.
- Reconnect: exponential backoff with full jitter between `backoff_min` and `backoff_max`
  after every failed attempt or lost link; never a tight loop.
- Liveness: WebSocket ping every `ping_interval` s (OCPP's WebSocketPingInterval, changeable
  while connected; 0 = no pings), link declared dead and reset at once when a pong is
  `ping_timeout` s late (defaults 20 + 20: a dead NAT path is noticed within 40 s). The pings
  are ours, not websockets' keepalive: that one sends a close frame into the dead path and
  waits `close_timeout` more for an answer that cannot come.
- Security profile (see `resolve_security_profile`). What each attempt presents (profile,
  password, client certificate, trusted roots) comes from a credential source: the static
  `LinkParams` by default, or `station.trust.credentials.Credentials`, which also tries a new
  password, certificate or profile and falls back to the old one when the CSMS refuses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import structlog
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidMessage, InvalidStatus, InvalidURI

from station.ocpp import tls_check
from station.ocpp.rpc import SUBPROTOCOL, cancel_all

log = structlog.get_logger("station.ocpp.link")

SessionCallback = Callable[[Any, str], Awaitable[None]]
"""`async def on_session(ws, version)`; runs while connected. `version` is "201" or "16"."""
NeedsCallback = Callable[[], dict[str, int]]
"""Per version, how much unfinished work is bound to it (open transactions, queued messages)."""
NEEDS_POLL_SECONDS = 1.0


class LinkConfigError(ValueError):
    """The link parameters cannot work (bad URL, profile contradicting the URL, missing cert)."""


class VersionRefused(Exception):
    """The CSMS answered this version's BootNotification as not supported: a protocol answer, so
    the link switches to the other version (raised by the session callback)."""


class FailureKind(str, enum.Enum):
    AUTH_FAILED = "auth_failed"  # HTTP 401/403: wrong station id or password, or cert refused
    REFUSED = "refused"  # upgrade refused (4xx) or no acceptable subprotocol
    UNREACHABLE = "unreachable"  # DNS, TCP, timeout, 5xx
    TLS = "tls"  # TLS handshake / certificate verification failed
    LOST = "lost"  # an established link closed or stopped answering pings


@dataclass(frozen=True)
class LinkParams:
    """Everything the connection manager needs; built from the station settings."""

    station_id: str
    password: str | None = field(default=None, repr=False)
    primary: str = "201"
    url_201: str | None = None
    url_16: str | None = None
    security_profile: int | None = None
    ca_bundle: Path | str | None = None
    client_cert: Path | str | None = None
    client_key: Path | str | None = None
    start_version: str | None = None
    """The version last accepted on this endpoint ("201" | "16"): offered first; None: the primary."""
    primary_retry_seconds: float = 3600
    version_return_seconds: float = 60
    backoff_min: float = 1
    backoff_max: float = 60
    ping_interval: float = 20
    ping_timeout: float = 20
    open_timeout: float = 10


@dataclass
class LinkState:
    """Observable state of the link (for status, the API and logs). Never holds credentials."""

    connected: bool = False
    version: str | None = None
    url: str | None = None
    security_profile: int = 0
    last_error: str | None = None
    last_error_kind: FailureKind | None = None
    last_error_url: str | None = None
    """The URL (no credentials) whose attempt failed last: after a fallback it is not `url`."""
    connects: int = 0
    failed_attempts: int = 0
    connected_since: datetime | None = None
    last_sent_at: datetime | None = None
    last_received_at: datetime | None = None
    preferred_version: str | None = None

    @property
    def reconnects(self) -> int:
        return max(0, self.connects - 1)

    def as_dict(self) -> dict[str, Any]:
        return {
            "connected": self.connected,
            "version": self.version,
            "url": self.url,
            "security_profile": self.security_profile,
            "last_error": self.last_error,
            "last_error_kind": self.last_error_kind.value if self.last_error_kind else None,
            "last_error_url": self.last_error_url,
            "connects": self.connects,
            "reconnects": self.reconnects,
            "failed_attempts": self.failed_attempts,
            "connected_since": _iso(self.connected_since),
            "last_sent_at": _iso(self.last_sent_at),
            "last_received_at": _iso(self.last_received_at),
            "preferred_version": self.preferred_version,
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def endpoint_url(url: str, station_id: str) -> str:
    """Apply the URL rule: use as given, but append the station id to a URL ending in '/'."""
    return url + station_id if url.endswith("/") else url


def public_url(url: str) -> str:
    """The URL without any user:password part, safe for logs and status."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def resolve_security_profile(params: LinkParams) -> int:
    """Pick the security profile; raise LinkConfigError when the settings contradict each other.

    Explicit `security_profile` wins: 1 = basic auth (ws:// allowed), 2 = TLS + basic auth,
    3 = TLS client certificate, 0 = no authentication. Otherwise it is inferred from the
    primary URL and the credentials: wss:// + client certificate -> 3, wss:// + password -> 2,
    ws:// + password -> 1, no credentials -> 0. Profiles 2 and 3 require every configured URL
    to be wss://, so a fallback can never downgrade the password to plain text.
    """
    urls = [u for u in (params.url_201, params.url_16) if u]
    if not urls:
        raise LinkConfigError("no CSMS URL configured (OCPP_201_URL / OCPP_16_URL)")
    for url in urls:
        if urlsplit(url).scheme not in ("ws", "wss"):
            raise LinkConfigError(f"CSMS URL {public_url(url)!r} must start with ws:// or wss://")
        if "@" in urlsplit(url).netloc:
            raise LinkConfigError(f"CSMS URL {public_url(url)!r} must not carry credentials; set the password separately")
    primary_url = params.url_201 if params.primary == "201" else params.url_16
    primary_url = primary_url or urls[0]
    profile = params.security_profile
    if profile is None:
        secure = urlsplit(primary_url).scheme == "wss"
        if secure and params.client_cert:
            profile = 3
        elif params.password:
            profile = 2 if secure else 1
        else:
            profile = 0
    if profile not in (0, 1, 2, 3):
        raise LinkConfigError(f"security profile {profile} is not 0, 1, 2 or 3")
    if profile in (1, 2) and not params.password:
        raise LinkConfigError(f"security profile {profile} needs a password (OCPP_STATION_PASSWORD)")
    if profile == 3 and not (params.client_cert and params.client_key):
        raise LinkConfigError("security profile 3 needs a client certificate and key")
    if profile in (2, 3):
        plain = [public_url(u) for u in urls if urlsplit(u).scheme != "wss"]
        if plain:
            raise LinkConfigError(f"security profile {profile} needs wss:// URLs; got {', '.join(plain)}")
    return profile


@dataclass(frozen=True)
class Attempt:
    """What one connection attempt presents; built by the credential source before each attempt."""

    profile: int
    password: bytes | None = field(default=None, repr=False)
    client_cert: str | None = None
    client_key: str | None = None
    ca_bundle: str | None = None
    cadata: str | None = None
    """Installed CSMS roots (PEM); when set they are the trust anchors instead of `ca_bundle`."""
    trying: frozenset[str] = frozenset()
    """What is presented for the first time: "password", "certificate", "profile"."""


class CredentialSource(Protocol):
    @property
    def profile(self) -> int: ...

    def attempt(self, requested: int | None = None) -> Attempt: ...

    def connected(self, attempt: Attempt, server_certificate: bytes | None = None) -> None: ...

    def failed(self, attempt: Attempt, kind: FailureKind) -> None: ...


class StaticCredentials:
    """The link parameters as given, every time (tests, `station --once`, the load test)."""

    def __init__(self, params: LinkParams) -> None:
        self.params = params
        self.profile = resolve_security_profile(params)

    def attempt(self, requested: int | None = None) -> Attempt:
        p = self.params
        return Attempt(self.profile, p.password.encode() if p.password else None,
                       str(p.client_cert) if p.client_cert else None, str(p.client_key) if p.client_key else None,
                       str(p.ca_bundle) if p.ca_bundle else None)

    def connected(self, attempt: Attempt, server_certificate: bytes | None = None) -> None:
        pass

    def failed(self, attempt: Attempt, kind: FailureKind) -> None:
        pass


def basic_authorization(username: str, password: bytes) -> str:
    """HTTP Basic header value; the password is bytes (a 1.6 AuthorizationKey may be any octets)."""
    import base64

    return "Basic " + base64.b64encode(username.encode() + b":" + password).decode()


def ssl_context_for(attempt: Attempt) -> ssl.SSLContext:
    """TLS 1.2+ context and client certificate for profile 3. Trusted: with a provisioned CA bundle,
    the installed roots (the bundle is copied among them) or, when none are left, the bundle; without
    one, the system's CAs plus the installed roots (installing a root never takes trust away)."""
    if attempt.cadata and attempt.ca_bundle:
        context = ssl.create_default_context(cadata=attempt.cadata)
    else:
        context = ssl.create_default_context(cafile=attempt.ca_bundle)
        if attempt.cadata:
            context.load_verify_locations(cadata=attempt.cadata)
    if attempt.cadata:
        # An installed root may be a successor signed by its predecessor (AdditionalRootCertificateCheck):
        # it is a trust anchor as installed, not only when self-signed.
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if attempt.profile == 3:
        assert attempt.client_cert and attempt.client_key
        context.load_cert_chain(attempt.client_cert, attempt.client_key)
    return context


def backoff_delay(failures: int, minimum: float, maximum: float, rng: Callable[[], float] = random.random) -> float:
    """Full-jitter exponential backoff, never below `minimum` (no tight loop) nor above `maximum`."""
    cap = min(maximum, minimum * (2 ** min(failures + 1, 30)))
    return minimum + rng() * max(0.0, cap - minimum)


class _Failure(Exception):
    def __init__(self, kind: FailureKind, text: str) -> None:
        super().__init__(text)
        self.kind = kind
        self.text = text


class TrackedConnection:
    """Passes a WebSocket through, stamping message times into the link state."""

    def __init__(self, ws: ClientConnection, state: LinkState) -> None:
        self._ws = ws
        self._state = state

    async def recv(self) -> str | bytes:
        message = await self._ws.recv()
        self._state.last_received_at = datetime.now(timezone.utc)
        return message

    async def send(self, message: str) -> None:
        await self._ws.send(message)
        self._state.last_sent_at = datetime.now(timezone.utc)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ws, name)


class OcppLink:
    """Keeps one station connected to its CSMS; call `run()` as a task, cancel it to stop."""

    def __init__(
        self,
        params: LinkParams,
        on_session: SessionCallback,
        *,
        on_state: Callable[[LinkState], None] | None = None,
        rng: Callable[[], float] = random.random,
        monotonic: Callable[[], float] = time.monotonic,
        needs: NeedsCallback | None = None,
        credentials: CredentialSource | None = None,
        on_security_event: Callable[[str, str], object] | None = None,
    ) -> None:
        self.params = params
        self._needs = needs
        self._return_to: str | None = None
        self._next_return = monotonic() + params.version_return_seconds
        self._failed_returns = 0
        """Failed probes of the version work waits for, in a row: each doubles the wait (a version
        retired for good must not cost the working link a reconnect every minute)."""
        self.credentials: CredentialSource = credentials or StaticCredentials(params)
        self._on_security_event = on_security_event
        self._security_reported: set[str] = set()
        """TLS security events raised since the last connection: one per kind, not one per retry."""
        self._on_session = on_session
        self._on_state = on_state
        self._rng = rng
        self._monotonic = monotonic
        primary = params.primary if params.primary in SUBPROTOCOL else "201"
        if (primary == "201" and not params.url_201) or (primary == "16" and not params.url_16):
            primary = "16" if primary == "201" else "201"
        self.primary = primary
        start = params.start_version if params.start_version in SUBPROTOCOL and self.url_for(params.start_version or "") else primary
        self.state = LinkState(security_profile=self.profile, preferred_version=start)
        self._preferred = start
        self._outage = False
        """The last attempt failed: no probes of the primary until a connection works again."""
        self._preferred_since = monotonic()
        self._failures = 0
        self._ssl_contexts: dict[Attempt, ssl.SSLContext] = {}
        self._active: TrackedConnection | None = None
        self.ping_interval = float(params.ping_interval)
        self._ping_changed = asyncio.Event()
        self._dead: str | None = None

    # ------------------------------------------------------------------ config
    def url_for(self, version: str) -> str | None:
        url = self.params.url_201 if version == "201" else self.params.url_16
        return endpoint_url(url, self.params.station_id) if url else None

    def _other(self, version: str) -> str | None:
        other = "16" if version == "201" else "201"
        return other if self.url_for(other) else None

    @property
    def profile(self) -> int:
        return self.credentials.profile

    def ssl_context(self, attempt: Attempt | None = None) -> ssl.SSLContext:
        """TLS context for an attempt's material (cached per material: a new certificate gets a new one)."""
        attempt = attempt or self.credentials.attempt()
        key = replace(attempt, password=None, trying=frozenset())
        if key not in self._ssl_contexts:
            if len(self._ssl_contexts) > 4:
                self._ssl_contexts.clear()
            self._ssl_contexts[key] = ssl_context_for(attempt)
        return self._ssl_contexts[key]

    def _connect_kwargs(self, url: str, version: str, attempt: Attempt | None = None) -> dict[str, Any]:
        attempt = attempt or self.credentials.attempt()
        secure = urlsplit(url).scheme == "wss"
        headers: dict[str, str] = {}
        if attempt.profile in (1, 2) and attempt.password:
            headers["Authorization"] = basic_authorization(self.params.station_id, attempt.password)
        kwargs: dict[str, Any] = {
            "subprotocols": [SUBPROTOCOL[version]],
            "additional_headers": headers,
            "open_timeout": self.params.open_timeout,
            "ping_interval": None,  # our own keepalive (`_keepalive`)
            "ping_timeout": None,
            "close_timeout": 5,
            "proxy": None,
            "max_size": 2**20,
        }
        if secure:
            kwargs["ssl"] = self.ssl_context(attempt)
        return kwargs

    def set_ping_interval(self, seconds: float) -> None:
        """WebSocketPingInterval: applies to the connection that is up now (0 = no pings)."""
        self.ping_interval = max(0.0, float(seconds))
        self._ping_changed.set()

    async def _keepalive(self, ws: ClientConnection) -> None:
        """Ping every `ping_interval`; no pong within `ping_timeout`: reset the connection now.

        A path that swallows packets cannot carry a close handshake either, so the socket is
        aborted instead of closed: the session ends and the reconnect starts at once.
        """
        while True:
            self._ping_changed.clear()
            interval = self.ping_interval
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval if interval > 0 else None):
                    await self._ping_changed.wait()
                continue  # interval changed: start waiting afresh
            try:
                pong = await ws.ping()
            except ConnectionClosed:
                return
            try:
                async with asyncio.timeout(self.params.ping_timeout):
                    await pong
            except TimeoutError:
                self._dead = f"ping timeout (no pong within {self.params.ping_timeout:g} s)"
                log.warning(f"ocpp link: {self._dead}; resetting the connection")
                ws.transport.abort()
                return
            except ConnectionClosed:
                return

    # ------------------------------------------------------------------- state
    def _publish(self) -> None:
        if self._on_state is not None:
            try:
                self._on_state(replace(self.state))
            except Exception:  # noqa: BLE001 — an observer must not break the link
                log.exception("link state observer failed")

    def _choose_version(self) -> tuple[str, str]:
        """The version to try next and why (probe of the primary when the fallback period is over,
        or of the version unfinished work waits for)."""
        if self._return_to is not None:
            version, self._return_to = self._return_to, None
            return version, "probe"
        if (self._preferred != self.primary and not self._needed(self._preferred) and not self._outage
                and self._monotonic() - self._preferred_since >= self.params.primary_retry_seconds):
            return self.primary, "probe"
        return self._preferred, "preferred"

    def _needed(self, version: str) -> int:
        if self._needs is None:
            return 0
        try:
            return int(self._needs().get(version, 0))
        except Exception:  # noqa: BLE001 — a broken store must not stop the link
            log.exception("ocpp link: cannot read the unfinished work per version")
            return 0

    def _leave_for(self, version: str) -> tuple[str | None, float]:
        """While connected on `version`: the version to go to now (or None) and when to ask again.

        Work bound to the current version is finished first; then the other version is
        returned to if work waits for it; then the primary is probed after its retry period.
        """
        poll = NEEDS_POLL_SECONDS if self._needs is not None else float("inf")
        if self._needed(version):
            return None, poll
        other = self._other(version)
        now = self._monotonic()
        if other is not None and self._needed(other):
            if now >= self._next_return:
                return other, 0.0
            poll = min(poll, self._next_return - now)
        if version != self.primary:
            remaining = self.params.primary_retry_seconds - (now - self._preferred_since)
            if remaining <= 0:
                return self.primary, 0.0
            poll = min(poll, remaining)
        return None, poll

    async def _leave_when_due(self, version: str) -> str:
        while True:
            target, wait = self._leave_for(version)
            if target is not None:
                return target
            await asyncio.sleep(wait)

    def _switch(self, version: str, reason: str) -> None:
        if version == self._preferred:
            return
        log.warning(
            f"ocpp link: switching to OCPP {_label(version)} ({reason})",
            from_version=self._preferred,
            to_version=version,
            reason=reason,
        )
        self._preferred = version
        self._preferred_since = self._monotonic()
        self._next_return = self._preferred_since + self.params.version_return_seconds
        self.state.preferred_version = version

    # --------------------------------------------------------------------- run
    async def run(self) -> None:
        """Connect, run sessions and reconnect until cancelled."""
        if self.profile == 1 and any(urlsplit(u).scheme == "ws" for u in (self.params.url_201, self.params.url_16) if u):
            log.warning("ocpp link: security profile 1 sends the station password over unencrypted ws://; use wss:// outside trusted networks")
        elif self.profile == 0:
            log.warning("ocpp link: no authentication configured (security profile 0)")
        log.info(
            "ocpp link: starting",
            station_id=self.params.station_id,
            primary=self.primary,
            url_201=public_url(self.url_for("201") or "") or None,
            url_16=public_url(self.url_for("16") or "") or None,
            security_profile=self.profile,
        )
        try:
            while True:
                version, why = self._choose_version()
                try:
                    await self._attempt(version, why)
                    self._failures = 0  # a session ran; start the backoff over
                except _Failure as failure:
                    self._record_failure(version, why, failure)
                await asyncio.sleep(backoff_delay(self._failures, self.params.backoff_min, self.params.backoff_max, self._rng))
                self._failures += 1
        finally:
            self.state.connected = False
            self._publish()

    async def disconnect(self) -> None:
        """Close the current connection (the manager reconnects); used by tests and resets."""
        if self._active is not None:
            await self._active.close()

    def _record_failure(self, version: str, why: str, failure: _Failure) -> None:
        self.state.failed_attempts += 1
        self._outage = failure.kind is not FailureKind.REFUSED
        self.state.last_error = failure.text
        self.state.last_error_kind = failure.kind
        url = public_url(self.url_for(version) or "")
        self.state.last_error_url = url or None
        if failure.kind is FailureKind.AUTH_FAILED:
            log.error(f"ocpp link: authentication failed at {url}: {failure.text}", version=version, kind=failure.kind.value)
        else:
            log.warning(f"ocpp link: cannot connect to {url}: {failure.text}", version=version, kind=failure.kind.value)
        other = self._other(version)
        if why == "probe":
            # The primary (or the version work waits for) is still not usable: back to what worked.
            self._preferred_since = self._monotonic()
            self._failed_returns += 1
            wait = min(self.params.version_return_seconds * 2 ** min(self._failed_returns - 1, 20),
                       max(self.params.version_return_seconds, self.params.primary_retry_seconds))
            self._next_return = self._preferred_since + wait
            log.warning(f"ocpp link: OCPP {_label(version)} still unavailable; staying on OCPP {_label(self._preferred)}")
        elif other is not None and failure.kind is FailureKind.REFUSED:
            self._switch(other, f"OCPP {_label(version)} endpoint refused: {failure.text}")
        self._publish()

    async def _attempt(self, version: str, why: str) -> None:
        attempt = self.credentials.attempt(self.params.security_profile)
        self.state.security_profile = attempt.profile
        try:
            await self._connect_and_serve(version, attempt)
        except _Failure as failure:
            self.credentials.failed(attempt, failure.kind)
            raise

    async def _connect_and_serve(self, version: str, attempt: Attempt) -> None:
        url = self.url_for(version)
        assert url is not None
        if attempt.profile in (2, 3) and urlsplit(url).scheme != "wss":
            raise _Failure(FailureKind.REFUSED, f"security profile {attempt.profile} needs a wss:// URL")
        try:
            ws = await connect(url, **self._connect_kwargs(url, version, attempt))
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403):
                raise _Failure(FailureKind.AUTH_FAILED, f"HTTP {status} (check station id and password/certificate)") from None
            if 400 <= status < 500:
                raise _Failure(FailureKind.REFUSED, f"HTTP {status} on upgrade") from None
            raise _Failure(FailureKind.UNREACHABLE, f"HTTP {status} on upgrade") from None
        except ssl.SSLError as exc:
            text = f"TLS: {exc.reason or exc.__class__.__name__}"
            await self._tls_security_event(url, exc, text)
            raise _Failure(FailureKind.TLS, text) from None
        except InvalidMessage as exc:  # closed or garbled before any HTTP answer: a down CSMS, not a refusal
            raise _Failure(FailureKind.UNREACHABLE, f"handshake: {exc}") from None
        except (InvalidHandshake, InvalidURI) as exc:
            raise _Failure(FailureKind.REFUSED, f"handshake: {exc}") from None
        except (OSError, TimeoutError, EOFError) as exc:
            if isinstance(exc, (ConnectionResetError, EOFError)) and urlsplit(url).scheme == "wss":
                await self._tls_security_event(url, exc, "connection reset during the TLS handshake")
            raise _Failure(FailureKind.UNREACHABLE, f"{exc.__class__.__name__}: {exc}".rstrip(": ")) from None
        if ws.subprotocol != SUBPROTOCOL[version]:
            await ws.close(1002, "subprotocol required")
            raise _Failure(FailureKind.REFUSED, f"server did not accept subprotocol {SUBPROTOCOL[version]}")
        if version != self._preferred:
            self._switch(version, "probe of the primary succeeded")
            self._failed_returns = 0
        self._outage = False
        self._security_reported.clear()
        ssl_object = ws.transport.get_extra_info("ssl_object") if ws.transport is not None else None
        self.credentials.connected(attempt, ssl_object.getpeercert(binary_form=True) if ssl_object else None)
        await self._serve(ws, version)

    async def _tls_security_event(self, url: str, exc: BaseException, text: str) -> None:
        """Raise InvalidCsmsCertificate / InvalidTLSVersion / InvalidTLSCipherSuite for a failed handshake.

        Once per kind until a connection succeeds (not once per retry); a failure that does not
        name its cause gets one diagnostic handshake per outage (`station.ocpp.tls_check`).
        """
        if self._on_security_event is None:
            return
        kind, detail = tls_check.classify(exc), f"{public_url(url)}: {text}"
        if kind is None and "diagnosed" not in self._security_reported:
            self._security_reported.add("diagnosed")
            parts = urlsplit(url)
            found = await tls_check.diagnose(parts.hostname or "", parts.port or 443, timeout=self.params.open_timeout)
            if found is not None:
                kind, detail = found[0], f"{public_url(url)}: {found[1]}"
        if kind is None or kind in self._security_reported:
            return
        self._security_reported.add(kind)
        try:
            self._on_security_event(kind, detail)
        except Exception:  # noqa: BLE001 — reporting must not break the reconnect loop
            log.exception("ocpp link: security event not recorded", type=kind)

    async def _serve(self, ws: ClientConnection, version: str) -> None:
        tracked = TrackedConnection(ws, self.state)
        self._active = tracked
        now = datetime.now(timezone.utc)
        self.state.connected = True
        self.state.version = version
        self.state.url = public_url(self.url_for(version) or "")
        self.state.connects += 1
        self.state.connected_since = now
        self.state.last_error = None
        self.state.last_error_kind = None
        self._publish()
        log.info(f"ocpp link: connected to {self.state.url} with OCPP {_label(version)}", version=version, connects=self.state.connects)
        session = asyncio.create_task(self._on_session(tracked, version), name=f"ocpp-session-{version}")
        self._dead = None
        keepalive = asyncio.create_task(self._keepalive(ws), name="ocpp-keepalive")
        closed = asyncio.ensure_future(ws.wait_closed())
        waiters: set[asyncio.Future[Any]] = {session, closed}
        probe: asyncio.Task[str] | None = None
        if version != self.primary or self._needs is not None:
            probe = asyncio.create_task(self._leave_when_due(version), name="ocpp-version-probe-timer")
            waiters.add(probe)
        reason = "session ended"
        stopping = False
        try:
            done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            if probe is not None and probe in done and not session.done():
                target = probe.result()
                self._return_to = target
                if target == self.primary and not self._needed(target):
                    reason = f"probing primary OCPP {_label(self.primary)}"
                    log.info(f"ocpp link: closing OCPP {_label(version)} link to probe the primary OCPP {_label(self.primary)}")
                    await ws.close(1000, "probing primary")
                else:
                    reason = f"returning to OCPP {_label(target)}: transaction messages wait for it"
                    log.warning(f"ocpp link: closing OCPP {_label(version)} link: transaction messages wait for "
                                f"OCPP {_label(target)}", waiting=self._needed(target))
                    await ws.close(1000, "returning to the other version")
            if self._dead is not None:
                reason = self._dead
            elif session.done() and not session.cancelled():
                error = session.exception()
                if isinstance(error, ConnectionClosed):
                    reason = _closed_text(error)
                elif isinstance(error, VersionRefused):
                    reason = f"OCPP {_label(version)} refused: {error}"
                    other = self._other(version)
                    if other is not None:
                        self._switch(other, reason)
                elif error is not None:
                    reason = f"session failed: {error.__class__.__name__}"
                    log.error("ocpp link: session failed", exc_info=error)
            elif closed in done:
                reason = _closed_text_of(ws)
        except asyncio.CancelledError:
            stopping = True  # the station closes the link itself (shutdown, `--once` done): not an error
            raise
        finally:
            try:
                await cancel_all([t for t in (session, probe, closed, keepalive) if t is not None])
            finally:
                await ws.close()
            self._active = None
            self.state.connected = False
            if stopping:
                self._publish()
                log.info("ocpp link: closed by the station", version=version)
            else:
                self.state.last_error = reason
                self.state.last_error_kind = FailureKind.LOST
                self._publish()
                log.warning(f"ocpp link: disconnected ({reason})", version=version)


def _closed_text(error: ConnectionClosed) -> str:
    if error.rcvd is None and error.sent is None:
        return "connection lost"
    frame = error.rcvd or error.sent
    assert frame is not None
    if frame.code == 1011 and "keepalive" in (frame.reason or ""):
        return "ping timeout"
    return f"closed with code {frame.code}{' ' + frame.reason if frame.reason else ''}"


def _closed_text_of(ws: ClientConnection) -> str:
    if ws.close_code is None:
        return "connection lost"
    if ws.close_code == 1011 and "keepalive" in (ws.close_reason or ""):
        return "ping timeout"
    return f"closed with code {ws.close_code}{' ' + ws.close_reason if ws.close_reason else ''}"


def _label(version: str) -> str:
    return {"201": "2.0.1", "16": "1.6"}.get(version, version)
