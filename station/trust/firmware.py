"""Remote software update ordered by the CSMS (OCPP UpdateFirmware), without any OCPP in it.

The daemon runs unprivileged and would be killed by its own restart, so it only fetches and
checks the release artefact and then hands it to the root-owned update flow with
:func:`station.update_request.request_update` (``station-update.path`` → ``station-update.service``,
install beside the current release, switch, smoke test, automatic rollback). After the
restart, the outcome in ``result.json`` becomes the final status, reported once.

Statuses (OCPP 2.0.1 names; the 1.6 adapter maps them onto its smaller set)::

    DownloadScheduled (until retrieveDateTime) → Downloading → Downloaded
      → SignatureVerified (signed requests) → InstallScheduled (installDateTime, or a
      transaction still running) → Installing (handed over) → restart → Installed | InstallationFailed
    failures: DownloadFailed (after the retries), InstallVerificationFailed (checksum, not a
      release of this project), InvalidSignature

Checksum convention (OCPP carries none): the SHA-256 of the artefact is taken from the URL
fragment ``#sha256=<64 hex>`` (as pip does; never sent to the server) or, without one, from a
sidecar file at ``<url>.sha256`` (``sha256sum`` output or the bare hex digest). An artefact
with neither is not installed. The version is read from the wheel's file name (wheels only; the
root side installs the version inside the wheel, and refuses a request naming another).

Interface: ``FirmwareUpdater(state_dir, is_idle=...)``; the OCPP client sets ``notify``,
runs :meth:`FirmwareUpdater.run` (watches for the update flow's result), calls
:meth:`start` then :meth:`launch` (after the CSMS got its answer) per request, reads
:meth:`current`, and calls :meth:`confirm_result` once the final status was delivered.
An accepted request is kept in ``firmware/job.json`` (0600, written before the answer leaves) until it ends, so a restart in the
middle (power cut, watchdog) carries it on instead of leaving the CSMS at "Downloading".
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

import structlog

if TYPE_CHECKING:
    import httpx

# httpx, cryptography and packaging are imported where an update needs them: at module level they
# cost the daemon ~11 MB of memory for a feature used a few times a year (docs/performance.md).

from station import update_request
from station.storage.durable import durable_unlink, durable_write_text, durable_writer
from station.trust import signature
from station.update_request import PROJECT

log = structlog.get_logger("station.trust.firmware")

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
"""A station wheel or sdist is well below 1 MiB; anything near this is not one."""
DEFAULT_RETRIES = 3
DEFAULT_RETRY_INTERVAL_S = 60.0
SIDECAR_MAX_BYTES = 4096
_SHA256_FRAGMENT = re.compile(r"(?:^|&)sha256=([^&]*)")
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


class FirmwareStatus(StrEnum):
    IDLE = "Idle"
    DOWNLOAD_SCHEDULED = "DownloadScheduled"
    DOWNLOADING = "Downloading"
    DOWNLOADED = "Downloaded"
    DOWNLOAD_FAILED = "DownloadFailed"
    SIGNATURE_VERIFIED = "SignatureVerified"
    INVALID_SIGNATURE = "InvalidSignature"
    INSTALL_VERIFICATION_FAILED = "InstallVerificationFailed"
    INSTALL_SCHEDULED = "InstallScheduled"
    INSTALLING = "Installing"
    INSTALLED = "Installed"
    INSTALLATION_FAILED = "InstallationFailed"


TERMINAL = frozenset({
    FirmwareStatus.IDLE, FirmwareStatus.DOWNLOAD_FAILED, FirmwareStatus.INVALID_SIGNATURE,
    FirmwareStatus.INSTALL_VERIFICATION_FAILED, FirmwareStatus.INSTALLED, FirmwareStatus.INSTALLATION_FAILED,
})
"""Nothing in progress after these: a triggered notification says Idle."""

_REFUSAL_STATUS = {"signature": FirmwareStatus.INVALID_SIGNATURE,
                   "verification": FirmwareStatus.INSTALL_VERIFICATION_FAILED}
"""The update flow's `refused` (station.field.update.Result) → final status; others are InstallationFailed."""


@dataclass(frozen=True)
class FirmwareRequest:
    """One UpdateFirmware, version-neutral."""

    location: str
    retrieve_at: datetime
    request_id: int | None = None
    install_at: datetime | None = None
    signing_certificate: str | None = None
    signature: str | None = None
    retries: int | None = None
    retry_interval_s: float | None = None


@dataclass(frozen=True)
class FirmwareNote:
    """A status for the CSMS. ``final``: the update flow's outcome; confirm it once delivered."""

    status: FirmwareStatus
    request_id: int | None = None
    detail: str = ""
    final: bool = False


@dataclass(frozen=True)
class Answer:
    """The answer to UpdateFirmware: Accepted, AcceptedCanceled, Rejected or InvalidCertificate."""

    status: str
    reason: str = ""


Notify = Callable[[FirmwareNote], Awaitable[None]]


class _Failed(Exception):
    def __init__(self, status: FirmwareStatus, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


# ----------------------------------------------------------------------------- pure helpers
def redact_url(url: str) -> str:
    """``scheme://host[:port]/path`` only: user info and query (pre-signed tokens) never reach a log."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = host + (f":{parts.port}" if parts.port else "")
    except ValueError:
        return "<unparseable URL>"
    return urlunsplit((parts.scheme, netloc, parts.path, "…" if parts.query else "", ""))


def split_location(location: str) -> tuple[str, str | None]:
    """(URL to fetch, SHA-256 from a ``#sha256=`` fragment or None). The fragment is never sent."""
    parts = urlsplit(location)
    match = _SHA256_FRAGMENT.search(parts.fragment)
    return urlunsplit(parts._replace(fragment="")), (match.group(1).lower() if match else None)


def sidecar_url(url: str) -> str:
    """``<url>.sha256``: the checksum file beside the artefact (query kept)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=parts.path + ".sha256"))


def parse_sidecar(text: str) -> str | None:
    """The digest in a ``.sha256`` file: ``sha256sum`` output (first line) or the bare hex."""
    words = text.strip().split()
    return words[0].lower() if words and _HEX64.match(words[0]) else None


def artefact_name(url: str) -> str:
    return unquote(urlsplit(url).path.rsplit("/", 1)[-1])


def release_version(filename: str, project: str = PROJECT) -> str:
    """The version from a wheel file name of ``project``; ValueError otherwise.

    Wheels only: the root side installs nothing else (an sdist would run its build code as root),
    and reads the version it installs from the wheel's own metadata."""
    from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

    if not filename.endswith(".whl"):
        raise ValueError(f"{filename!r} is not a wheel: only wheels of {project} are installed")
    try:
        name, version, _, _ = parse_wheel_filename(filename)
    except InvalidWheelFilename as exc:
        raise ValueError(str(exc)) from None
    if name != canonicalize_name(project):
        raise ValueError(f"{filename!r} is a release of {name}, not of {project}")
    return update_request.check_version(str(version))


def check_certificate(pem: str, now: datetime, roots: Sequence[str] = ()) -> str | None:
    """Why the signing certificate cannot be used (None: it can): it must chain, as a code-signing
    certificate valid now, to one of `roots`, the installed ManufacturerRootCertificates (L01.FR.12).

    The same rules as the root side's (`station.trust.signature`), which decides on its own anchors:
    this check only spares a download the root side would refuse anyway.
    """
    if not roots:
        return "no ManufacturerRootCertificate installed"
    return signature.chain_problem(pem, roots, now)


async def _checked(function: str, **kwargs: Any) -> str | None:
    """A certificate or signature check in the child process; a failed child counts as a refusal."""
    from station.trust import pki_worker

    try:
        return await pki_worker.call(function, **kwargs)  # type: ignore[no-any-return]
    except pki_worker.WorkerError as exc:
        log.error("firmware: check failed", check=function, error=str(exc))
        return "the check could not be run"


def _describe(exc: BaseException, url: str) -> str:
    """An error for the log without the URL's user info or query."""
    text = str(exc)
    parts = urlsplit(url)
    for secret in (parts.username, parts.password, parts.query, url):
        if secret:
            text = text.replace(secret, "***")
    return f"{exc.__class__.__name__}: {text}"[:300] if text else exc.__class__.__name__


# ----------------------------------------------------------------------------- the updater
class FirmwareUpdater:
    """Carries out one CSMS-ordered update at a time; see the module docstring."""

    def __init__(
        self,
        state_dir: Path,
        *,
        is_idle: Callable[[], bool] = lambda: True,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        max_bytes: int = DEFAULT_MAX_BYTES,
        default_retries: int = DEFAULT_RETRIES,
        default_retry_interval_s: float = DEFAULT_RETRY_INTERVAL_S,
        poll_seconds: float = 5.0,
        http_timeout_s: float = 60.0,
        project: str = PROJECT,
        manufacturer_roots: Callable[[], str] = lambda: "",
        allow_unsigned: bool = False,
    ) -> None:
        self.state_dir = state_dir
        self.manufacturer_roots = manufacturer_roots
        """The installed ManufacturerRootCertificates (PEM text) a firmware signing certificate must chain to.
        The certificate and signature checks run in a child process (`station.trust.pki_worker`): `cryptography`
        stays out of the daemon even when a request is refused."""
        self.allow_unsigned = allow_unsigned
        """Whether an update without signature may be installed at all (1.6 UpdateFirmware; development only)."""
        self.directory = state_dir / "firmware"
        self.is_idle = is_idle
        self.now = now
        self.max_bytes = max_bytes
        self.default_retries = default_retries
        self.default_retry_interval_s = default_retry_interval_s
        self.poll_seconds = poll_seconds
        self.http_timeout_s = http_timeout_s
        self.project = project
        self.notify: Notify | None = None
        self.security_event: Callable[[str, str], object] | None = None
        """`SecurityEventLog.record` (set by the OCPP client): refused certificates and signatures, FirmwareUpdated."""
        self._refusal_reported = False
        self.last_answer = ""
        """The answer to the latest request (Accepted, AcceptedCanceled, Rejected, InvalidCertificate)."""
        self.attempts = 0
        """Download attempts of the last request (for tests and status)."""
        self._status = FirmwareStatus.IDLE
        self._request_id: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._next: FirmwareRequest | None = None
        self._result_changed = asyncio.Event()
        handed = self._handed_over()
        if handed is not None:
            self._status = FirmwareStatus.INSTALLING
            self._request_id = handed.get("request_id")  # type: ignore[assignment]

    # ---- state -----------------------------------------------------------------------
    @property
    def status(self) -> FirmwareStatus:
        return self._status

    @property
    def busy(self) -> bool:
        return self._status not in TERMINAL or (self._task is not None and not self._task.done())

    def current(self) -> FirmwareNote:
        """What a triggered FirmwareStatusNotification reports: Idle unless something is in progress."""
        if not self.busy:
            return FirmwareNote(FirmwareStatus.IDLE)
        return FirmwareNote(self._status, self._request_id)

    @property
    def _marker(self) -> Path:
        return self.directory / "installing.json"

    def _handed_over(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self._marker.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    # ---- requests --------------------------------------------------------------------
    async def start(self, request: FirmwareRequest) -> Answer:
        """Accept (or refuse) a request; the work begins with :meth:`launch`.

        A request while another is still downloading or waiting cancels that one
        (``AcceptedCanceled``); once an artefact was handed over to the update flow it cannot
        be called back, so the new request is ``Rejected``.
        """
        answer = await self._answer(request)
        self.last_answer = answer.status
        return answer

    async def _answer(self, request: FirmwareRequest) -> Answer:
        if self._status == FirmwareStatus.INSTALLING:
            return Answer("Rejected", "an update is being installed")
        if request.signature and not request.signing_certificate:
            self._security_event("InvalidFirmwareSigningCertificate", "UpdateFirmware: signature without signing certificate")
            return Answer("InvalidCertificate", "signature without signing certificate")
        if not request.signing_certificate and not self.allow_unsigned:
            self._security_event("InvalidFirmwareSigningCertificate", "UpdateFirmware: unsigned update refused")
            return Answer("InvalidCertificate", "unsigned update refused")
        if request.signing_certificate:
            problem = await _checked("check_signing_certificate", pem=request.signing_certificate,
                                     roots=self.manufacturer_roots(), now=self.now().isoformat())
            if problem:
                log.warning("firmware: signing certificate refused", reason=problem)
                self._security_event("InvalidFirmwareSigningCertificate", f"UpdateFirmware: {problem}")
                return Answer("InvalidCertificate", problem)
        canceled = self._task is not None and not self._task.done()
        try:
            self._save_job(request)  # before the answer leaves: a cut right after it must not forget the request
        except OSError as exc:
            log.error("firmware: request not saved", error=str(exc))
            return Answer("Rejected", "the request could not be saved")
        if canceled:
            log.warning("firmware: update canceled by a newer request", request_id=self._request_id)
            assert self._task is not None
            self._task.cancel()
        self._next = request
        return Answer("AcceptedCanceled" if canceled else "Accepted")

    def launch(self) -> None:
        """Begin the accepted request (called once the CSMS has its answer, so statuses follow it)."""
        request, self._next = self._next, None
        if request is None:
            return
        previous = self._task
        self._request_id = request.request_id
        self._task = asyncio.get_running_loop().create_task(self._job(request, previous), name="firmware-update")

    # ---- an accepted request survives a restart (power cut, watchdog) until it ends ----------
    @property
    def _job_file(self) -> Path:
        return self.directory / "job.json"

    def _save_job(self, request: FirmwareRequest) -> None:
        """0600: the location may carry credentials. Written in :meth:`start`, before the answer (OSError: not saved)."""
        data = {
            "location": request.location, "retrieve_at": request.retrieve_at.isoformat(), "request_id": request.request_id,
            "install_at": request.install_at.isoformat() if request.install_at else None,
            "signing_certificate": request.signing_certificate, "signature": request.signature,
            "retries": request.retries, "retry_interval_s": request.retry_interval_s,
        }
        self.directory.mkdir(parents=True, exist_ok=True)
        durable_write_text(self._job_file, json.dumps(data), mode=0o600)  # an accepted request survives a cut

    def _load_job(self) -> FirmwareRequest | None:
        try:
            data = json.loads(self._job_file.read_text())
            return FirmwareRequest(
                location=str(data["location"]), retrieve_at=datetime.fromisoformat(data["retrieve_at"]),
                request_id=data.get("request_id"),
                install_at=datetime.fromisoformat(data["install_at"]) if data.get("install_at") else None,
                signing_certificate=data.get("signing_certificate"), signature=data.get("signature"),
                retries=data.get("retries"), retry_interval_s=data.get("retry_interval_s"),
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("firmware: unreadable saved request dropped", error=exc.__class__.__name__)
            durable_unlink(self._job_file)
            return None

    def _resume(self) -> None:
        """A request the daemon was working on when it stopped is carried on (not handed over yet)."""
        if self._task is not None or self._handed_over() is not None:
            return
        request = self._load_job()
        if request is not None:
            log.warning("firmware: resuming an update interrupted by a restart", request_id=request.request_id)
            self._next = request
            self.launch()

    async def close(self) -> None:
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task})  # unlike awaiting it, never swallows our own cancellation

    # ---- the update flow's outcome ------------------------------------------------------
    async def run(self) -> None:
        """Report the update flow's result once it appears (now, or after the smoke test)."""
        self._resume()
        try:
            while True:
                note = self._result_note()
                if note is not None:
                    await self._emit(note)
                    self._result_changed.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.poll_seconds):
                            await self._result_changed.wait()
                    continue
                await asyncio.sleep(self.poll_seconds)
        finally:
            await self.close()

    def _result_note(self) -> FirmwareNote | None:
        result = update_request.read_result(state_dir=self.state_dir)
        if result is None:
            return None
        handed = self._handed_over() or {}
        request_id = handed.get("request_id") if isinstance(handed.get("request_id"), int) else None
        ok = bool(result.get("ok"))
        detail = str(result.get("detail", ""))
        refused = result.get("refused")
        status = FirmwareStatus.INSTALLED if ok else _REFUSAL_STATUS.get(str(refused), FirmwareStatus.INSTALLATION_FAILED)
        if self._status != status:
            (log.info if ok else log.error)(
                "firmware: update flow finished", status=status.value, action=result.get("action"),
                version=result.get("version"), previous=result.get("previous"), detail=detail, request_id=request_id,
            )
        self._status, self._request_id = status, request_id
        if ok and handed and not handed.get("security_event"):
            # Once per update, also across restarts before the CSMS confirmed the final status.
            self._security_event("FirmwareUpdated", f"version {result.get('version')} installed"
                                 f" (was {result.get('previous')}), request {request_id}")
            handed["security_event"] = True
            with contextlib.suppress(OSError):
                durable_write_text(self._marker, json.dumps(handed), mode=0o600)
        if refused == "signature" and not handed.get("security_event") and not self._refusal_reported:
            # The root side refused what the daemon had accepted: its own anchors disagree with the CSMS's.
            self._refusal_reported = True
            self._security_event("InvalidFirmwareSignature", f"request {request_id}: refused by the update flow: {detail}"[:255])
            if handed:
                handed["security_event"] = True
                with contextlib.suppress(OSError):
                    durable_write_text(self._marker, json.dumps(handed), mode=0o600)
        return FirmwareNote(status, request_id, detail, final=True)

    def _security_event(self, type_: str, tech_info: str) -> None:
        if self.security_event is not None:
            self.security_event(type_, tech_info)

    def confirm_result(self) -> None:
        """The CSMS confirmed the final status: forget the result so it is never sent again."""
        handed = self._handed_over() or {}
        update_request.clear_result(state_dir=self.state_dir)
        durable_unlink(self._marker)
        artefact = handed.get("artefact")
        if isinstance(artefact, str) and Path(artefact).parent == self.directory:
            Path(artefact).unlink(missing_ok=True)
        self._result_changed.set()

    # ---- one request ---------------------------------------------------------------------
    async def _emit(self, note: FirmwareNote) -> None:
        self._status = note.status
        if self.notify is None:
            return
        try:
            await self.notify(note)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 — a status that could not be sent never stops the update
            log.warning("firmware: status not delivered", status=note.status.value, error=exc.__class__.__name__)

    async def _job(self, request: FirmwareRequest, previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            # The replaced request finishes cancelling first; asyncio.wait (not a suppressed await)
            # so that this job, replaced in turn meanwhile, is cancelled too.
            await asyncio.wait({previous})
        rid = request.request_id
        url, expected = split_location(request.location)
        shown = redact_url(url)
        log.info("firmware: update requested", url=shown, request_id=rid, retrieve_at=request.retrieve_at.isoformat(),
                 signed=bool(request.signature))
        self.attempts = 0
        try:
            if urlsplit(url).scheme not in ("http", "https"):
                raise _Failed(FirmwareStatus.DOWNLOAD_FAILED, f"unsupported URL scheme in {shown}")
            try:
                version = release_version(artefact_name(url), self.project)
            except (ValueError, update_request.UpdateError) as exc:
                raise _Failed(FirmwareStatus.INSTALL_VERIFICATION_FAILED, str(exc)) from None
            wait = (request.retrieve_at - self.now()).total_seconds()
            if wait > 0:
                await self._emit(FirmwareNote(FirmwareStatus.DOWNLOAD_SCHEDULED, rid))
                await asyncio.sleep(wait)
            await self._emit(FirmwareNote(FirmwareStatus.DOWNLOADING, rid))
            path, digest, sidecar = await self._download(request, url, shown)
            await self._emit(FirmwareNote(FirmwareStatus.DOWNLOADED, rid))
            expected = expected or sidecar
            if expected is None and not request.signing_certificate:
                raise _Failed(FirmwareStatus.INSTALL_VERIFICATION_FAILED,
                              "no checksum: give the URL a #sha256=<hex> fragment or publish <url>.sha256")
            if expected is not None and digest.hex() != expected:
                raise _Failed(FirmwareStatus.INSTALL_VERIFICATION_FAILED, "SHA-256 of the artefact does not match its checksum")
            if request.signing_certificate:
                # The signature covers the artefact itself: with it, a checksum is optional.
                problem = (await _checked("verify_firmware_signature", pem=request.signing_certificate,
                                          signature=request.signature, sha256=digest.hex(), path=str(path))
                           if request.signature else "no signature")
                if problem:
                    self._security_event("InvalidFirmwareSignature", f"request {rid}: {problem}")
                    raise _Failed(FirmwareStatus.INVALID_SIGNATURE, problem)
                await self._emit(FirmwareNote(FirmwareStatus.SIGNATURE_VERIFIED, rid))
            await self._wait_install(request)
            durable_write_text(self._marker, json.dumps({"request_id": rid, "version": version, "artefact": str(path)}),
                               mode=0o600)
            try:
                update_request.request_update(path, version, sha256=digest.hex(), state_dir=self.state_dir,
                                              signing_certificate=request.signing_certificate, signature=request.signature)
            except (OSError, update_request.UpdateError) as exc:
                durable_unlink(self._marker)
                raise _Failed(FirmwareStatus.INSTALL_VERIFICATION_FAILED, f"hand-over failed: {exc}") from None
            log.warning("firmware: artefact verified and handed to the update flow; the daemon will be restarted",
                        version=version, request_id=rid)
            durable_unlink(self._job_file)
            await self._emit(FirmwareNote(FirmwareStatus.INSTALLING, rid))
        except _Failed as failed:
            durable_unlink(self._job_file)
            self._clean(keep=None)
            log.error("firmware: update failed", status=failed.status.value, detail=failed.detail, url=shown, request_id=rid)
            await self._emit(FirmwareNote(failed.status, rid, failed.detail))
        except asyncio.CancelledError:
            log.info("firmware: update canceled", request_id=rid)
            raise
        finally:
            self._clean(keep=self._handed_over())

    async def _wait_install(self, request: FirmwareRequest) -> None:
        """Until installDateTime and until no transaction runs (the restart would end it)."""
        scheduled = False
        while True:
            wait = (request.install_at - self.now()).total_seconds() if request.install_at else 0.0
            if wait <= 0 and self.is_idle():
                return
            if not scheduled:
                await self._emit(FirmwareNote(FirmwareStatus.INSTALL_SCHEDULED, request.request_id))
                scheduled = True
            await asyncio.sleep(min(max(wait, 0.0), 1.0) if wait > 0 else 1.0)

    async def _download(self, request: FirmwareRequest, url: str, shown: str) -> tuple[Path, bytes, str | None]:
        """(artefact path, its SHA-256, the sidecar's digest if one was fetched), with retries."""
        attempts = max(1, request.retries if request.retries is not None else self.default_retries)
        interval = request.retry_interval_s if request.retry_interval_s is not None else self.default_retry_interval_s
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.directory / artefact_name(url)
        _, fragment = split_location(request.location)
        last = ""
        import httpx

        async with httpx.AsyncClient(timeout=self.http_timeout_s, follow_redirects=True, max_redirects=5) as client:
            for attempt in range(1, attempts + 1):
                self.attempts = attempt
                try:
                    digest = await self._fetch(client, url, target)
                    sidecar = None if fragment else await self._fetch_sidecar(client, url)
                    return target, digest, sidecar
                except _Failed:
                    raise
                except (httpx.HTTPError, OSError) as exc:
                    last = _describe(exc, url)
                    log.warning(f"firmware: download attempt {attempt}/{attempts} failed", url=shown, error=last)
                if attempt < attempts:
                    await asyncio.sleep(max(0.0, float(interval)))
        raise _Failed(FirmwareStatus.DOWNLOAD_FAILED, f"{attempts} attempt(s) failed; last: {last}")

    async def _fetch(self, client: httpx.AsyncClient, url: str, target: Path) -> bytes:
        """Stream ``url`` into ``target`` (via a temp file beside it) within ``max_bytes``; its SHA-256."""
        import httpx

        hasher = hashlib.sha256()
        with durable_writer(target, mode=0o600) as handle:
            async with client.stream("GET", url) as response:
                if response.status_code != 200:
                    raise httpx.HTTPStatusError(f"HTTP {response.status_code}", request=response.request, response=response)
                declared = response.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > self.max_bytes:
                    raise _Failed(FirmwareStatus.DOWNLOAD_FAILED, f"artefact larger than {self.max_bytes} bytes")
                size = 0
                async for chunk in response.aiter_bytes(65536):
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise _Failed(FirmwareStatus.DOWNLOAD_FAILED, f"artefact larger than {self.max_bytes} bytes")
                    hasher.update(chunk)
                    handle.write(chunk)
        return hasher.digest()

    async def _fetch_sidecar(self, client: httpx.AsyncClient, url: str) -> str | None:
        """The digest published at ``<url>.sha256``; None when there is none (404/410)."""
        import httpx

        async with client.stream("GET", sidecar_url(url)) as response:
            if response.status_code in (404, 410):
                return None
            if response.status_code != 200:
                raise httpx.HTTPStatusError(f"HTTP {response.status_code}", request=response.request, response=response)
            body = b""
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > SIDECAR_MAX_BYTES:
                    raise _Failed(FirmwareStatus.INSTALL_VERIFICATION_FAILED, "checksum file too large")
        digest = parse_sidecar(body.decode("utf-8", "replace"))
        if digest is None:
            raise _Failed(FirmwareStatus.INSTALL_VERIFICATION_FAILED, "checksum file holds no SHA-256 digest")
        return digest

    def _clean(self, keep: dict[str, Any] | None) -> None:
        """Remove downloads nobody will install (the handed-over artefact stays for the update flow)."""
        kept = {Path(str(keep.get("artefact")))} if keep else set()
        if not self.directory.is_dir():
            return
        for item in self.directory.iterdir():
            if item.name in ("installing.json", "job.json") or item in kept:
                continue
            with contextlib.suppress(OSError):
                item.unlink()
