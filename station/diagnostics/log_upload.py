"""A CSMS-ordered log upload (2.0.1 GetLog, 1.6 GetDiagnostics and the 1.6 security whitepaper's
GetLog), without any OCPP in it: build the archive, upload it with retries, report each step.

Statuses (2.0.1 ``UploadLogStatusEnumType`` names; the 1.6 adapter maps them for
DiagnosticsStatusNotification)::

    Uploading → Uploaded
              → UploadFailure | PermissionDenied | NotSupportedOperation | BadMessage (after the retries)
    Idle: nothing runs (a triggered notification)

One request at a time: a new one cancels the running one (the answer says ``AcceptedCanceled``,
and the canceled request's last status is ``AcceptedCanceled`` where the version has that word). The archive is built in
a worker thread (compression) from sources taken in the event loop (state snapshot, flushed
flight recorder) and deleted once the upload ended either way.

Interface: the OCPP client sets ``notify``, calls :meth:`start` (the answer, with the file
name) and then :meth:`launch` once the CSMS has its answer, reads :meth:`current` for a
triggered notification, and awaits :meth:`close` on shutdown.

An accepted request is saved in ``<work_dir>/request.json`` (0600: the location may carry
credentials) before the answer leaves, with the upload attempts made so far and, once it ended,
its final status; the file goes when the CSMS has that final status (:meth:`delivered`). After a
restart (power cut, watchdog, stop) :meth:`resume` carries it on: the final status not yet
delivered is sent again, an upload with tries left is taken up again (a rebuilt archive of the
same name), and one whose tries are spent ends with UploadFailure (1.6: UploadFailed).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

import structlog

from station.diagnostics import archive
from station.diagnostics.archive import public_location
from station.diagnostics.upload import UploadError, check_location, resolve_target, target_refusal, upload
from station.storage.durable import durable_unlink, durable_write_text

log = structlog.get_logger("station.diagnostics")

DEFAULT_RETRIES = 2
"""Tries after the first when the request names none."""
DEFAULT_RETRY_INTERVAL_S = 30.0
JOB_TASK_NAME = "log-upload"
"""Every upload runs in a task of this name (the client recognises a status send cancelled with its job)."""
JOB_FILE = "request.json"
"""The accepted request, in the work directory, until the CSMS has its final status."""


class LogStatus(StrEnum):
    IDLE = "Idle"
    UPLOADING = "Uploading"
    UPLOADED = "Uploaded"
    UPLOAD_FAILURE = "UploadFailure"
    BAD_MESSAGE = "BadMessage"
    PERMISSION_DENIED = "PermissionDenied"
    NOT_SUPPORTED_OPERATION = "NotSupportedOperation"
    ACCEPTED_CANCELED = "AcceptedCanceled"
    """2.0.1 only: the upload of this request was canceled by a newer request."""


@dataclass(frozen=True)
class LogRequest:
    """One GetLog / GetDiagnostics, version-neutral. ``origin``: "GetLog" or "GetDiagnostics"."""

    location: str
    log_type: str = archive.DIAGNOSTICS
    request_id: int | None = None
    since: datetime | None = None
    until: datetime | None = None
    retries: int | None = None
    retry_interval_s: float | None = None
    origin: str = "GetLog"


@dataclass(frozen=True)
class LogNote:
    """A status for the CSMS."""

    status: LogStatus
    request_id: int | None = None
    origin: str = "GetLog"
    detail: str = ""


@dataclass(frozen=True)
class LogAnswer:
    status: str  # Accepted, AcceptedCanceled, Rejected
    filename: str | None = None
    reason: str = ""


Notify = Callable[[LogNote], Awaitable[None]]
SourcesFactory = Callable[[datetime | None, datetime | None], archive.Sources]
"""Called in the event loop (the snapshot and anything read from the store are taken there)."""


class LogUploader:
    """Carries out one log upload at a time; see the module docstring."""

    def __init__(
        self,
        work_dir: Path,
        sources: SourcesFactory,
        *,
        station_id: str,
        before_build: Callable[[], None] | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        default_retries: int = DEFAULT_RETRIES,
        default_retry_interval_s: float = DEFAULT_RETRY_INTERVAL_S,
        timeout_s: float = 60.0,
        ca_bundle: str | None = None,
        allow_local_targets: bool = False,
    ) -> None:
        """`allow_local_targets`: uploads may go to loopback, link-local and the station's own
        addresses (STATION_LOG_UPLOAD_ALLOW_LOCAL; test rigs with loopback upload servers)."""
        self.work_dir = work_dir
        self.sources = sources
        self.station_id = station_id
        self.before_build = before_build
        self.now = now
        self.default_retries = default_retries
        self.default_retry_interval_s = default_retry_interval_s
        self.timeout_s = timeout_s
        self.ca_bundle = ca_bundle
        self.allow_local_targets = allow_local_targets
        self.notify: Notify | None = None
        self.attempts = 0
        self.last_built: archive.Built | None = None
        """The latest archive built (its size and build time; for tests and the bench)."""
        self._task: asyncio.Task[None] | None = None
        self._running: LogRequest | None = None
        self._next: tuple[LogRequest, str] | None = None
        self._replacing: LogRequest | None = None
        self._saved: dict[str, object] | None = None
        """What `request.json` holds (None: no request outstanding)."""
        self._final: LogNote | None = None
        """The final status of the saved request, sent and not yet confirmed delivered."""

    @property
    def busy(self) -> bool:
        return self._task is not None and not self._task.done()

    def current(self) -> LogNote:
        """What a triggered notification reports: Uploading (with the request) or Idle."""
        if self.busy and self._running is not None:
            return LogNote(LogStatus.UPLOADING, self._running.request_id, self._running.origin)
        return LogNote(LogStatus.IDLE)

    async def check_target(self, request: LogRequest) -> LogAnswer | None:
        """The refusal of a request whose host resolves to a forbidden address (`target_refusal`), else None."""
        if self.allow_local_targets or check_location(request.location):
            return None
        problem = await target_refusal(request.location)
        if problem is None:
            return None
        log.warning("logs: upload request refused", reason=problem, location=public_location(request.location))
        return LogAnswer("Rejected", reason=problem)

    def start(self, request: LogRequest) -> LogAnswer:
        """Accept (or refuse) a request; the work begins with :meth:`launch`."""
        problem = check_location(request.location)
        if problem:
            log.warning("logs: upload request refused", reason=problem, location=public_location(request.location))
            return LogAnswer("Rejected", reason=problem)
        if request.since and request.until and request.since > request.until:
            return LogAnswer("Rejected", reason="oldestTimestamp is after latestTimestamp")
        name = archive.archive_name(self.station_id, request.log_type, self.now())
        try:
            self._save({"request": _request_data(request), "name": name, "attempts": 0, "final": None})
        except OSError as exc:
            log.error("logs: upload request not saved", error=f"{exc.__class__.__name__}: {exc.strerror or exc}")
            return LogAnswer("Rejected", reason="the request could not be saved")
        self._final = None
        canceled = self.busy
        if canceled:
            log.warning("logs: upload canceled by a newer request", request_id=self._running.request_id if self._running else None)
            assert self._task is not None
            self._task.cancel()
            self._replacing = self._running
        self._next = (request, name)
        return LogAnswer("AcceptedCanceled" if canceled else "Accepted", filename=name)

    def launch(self) -> None:
        """Begin the accepted request (after the CSMS got its answer, so statuses follow it)."""
        pending, self._next = self._next, None
        if pending is None:
            return
        request, name = pending
        previous, replaced, self._replacing = self._task, self._replacing, None
        self._running = request
        self._task = asyncio.get_running_loop().create_task(self._job(request, name, previous, replaced), name=JOB_TASK_NAME)

    def resume(self) -> None:
        """Carry on the request a restart interrupted (see the module docstring); call once at start-up."""
        if self.busy or self._next is not None:
            return
        saved = self._load()
        if saved is None:
            return
        try:
            request = _request_from(saved["request"])  # type: ignore[arg-type]
            name, done = str(saved["name"]), int(saved.get("attempts") or 0)  # type: ignore[call-overload]
            final = saved.get("final")
            note = (LogNote(LogStatus(final["status"]), request.request_id, request.origin,  # type: ignore[index]
                            str(final.get("detail", ""))) if isinstance(final, dict) else None)
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("logs: unreadable saved upload request dropped", error=exc.__class__.__name__)
            self._forget()
            return
        self._saved, self._running = saved, request
        if note is not None:
            log.warning("logs: final status of an upload not yet delivered before a restart: sent again",
                        status=note.status.value, request_id=request.request_id)
            job = self._report(note)
        elif done < self._tries(request):
            log.warning("logs: resuming an upload interrupted by a restart", request_id=request.request_id,
                        attempts_made=done)
            job = self._job(request, name, None, None, done=done)
        else:
            log.error("logs: upload interrupted by a restart with no tries left", request_id=request.request_id,
                      attempts_made=done)
            job = self._report(LogNote(LogStatus.UPLOAD_FAILURE, request.request_id, request.origin,
                                       f"interrupted by a restart after {done} attempt(s)"))
        self._task = asyncio.get_running_loop().create_task(job, name=JOB_TASK_NAME)

    def delivered(self, note: LogNote) -> None:
        """The CSMS has `note`: when it is the saved request's final status, the request is done."""
        if note is self._final:
            self._forget()

    async def close(self) -> None:
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task})

    # ---- the saved request -------------------------------------------------------------
    @property
    def job_file(self) -> Path:
        return self.work_dir / JOB_FILE

    def _save(self, data: dict[str, object]) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
        durable_write_text(self.job_file, json.dumps(data), mode=0o600)  # before the answer: it survives a cut
        self._saved = data

    def _update(self, **changes: object) -> None:
        """Record progress of the saved request; a failed write is logged (the upload goes on)."""
        if self._saved is None:
            return
        try:
            self._save({**self._saved, **changes})
        except OSError as exc:
            log.warning("logs: upload progress not saved", error=f"{exc.__class__.__name__}: {exc.strerror or exc}")

    def _load(self) -> dict[str, object] | None:
        try:
            data = json.loads(self.job_file.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("logs: unreadable saved upload request dropped", error=exc.__class__.__name__)
            self._forget()
            return None
        return data if isinstance(data, dict) else None

    def _forget(self) -> None:
        self._saved, self._final = None, None
        try:
            durable_unlink(self.job_file)
        except OSError as exc:
            log.warning("logs: saved upload request not removed", error=f"{exc.__class__.__name__}: {exc.strerror or exc}")

    async def _finish(self, note: LogNote) -> None:
        """A final status: saved with the request (sent again after a restart until delivered), then sent."""
        self._update(final={"status": note.status.value, "detail": note.detail})
        await self._report(note)

    async def _report(self, note: LogNote) -> None:
        self._final = note
        await self._emit(note)
        if self.notify is None:
            self.delivered(note)

    def _tries(self, request: LogRequest) -> int:
        retries = request.retries if request.retries is not None else self.default_retries
        return 1 + max(0, retries)

    async def _emit(self, note: LogNote) -> None:
        if self.notify is None:
            return
        try:
            await self.notify(note)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 — a status that could not be sent never stops the upload
            log.warning("logs: status not delivered", status=note.status.value, error=exc.__class__.__name__)

    async def _job(self, request: LogRequest, name: str, previous: asyncio.Task[None] | None,
                   replaced: LogRequest | None, *, done: int = 0) -> None:
        """`done`: upload attempts already made for this request (before a restart)."""
        if previous is not None:
            await asyncio.wait({previous})
        if replaced is not None:
            await self._emit(LogNote(LogStatus.ACCEPTED_CANCELED, replaced.request_id, replaced.origin))
        rid, origin = request.request_id, request.origin
        shown = public_location(request.location)
        log.info("logs: upload requested", log_type=request.log_type, location=shown, request_id=rid,
                 oldest=request.since.isoformat() if request.since else None,
                 latest=request.until.isoformat() if request.until else None)
        built: archive.Built | None = None
        job_dir: Path | None = None
        try:
            await self._emit(LogNote(LogStatus.UPLOADING, rid, origin))
            if self.before_build is not None:
                self.before_build()
            sources = self.sources(request.since, request.until)
            job_dir = self._job_dir()
            built = await asyncio.to_thread(archive.build, job_dir, sources, log_type=request.log_type,
                                            since=request.since, until=request.until, now=self.now(), name=name)
            self.last_built = built
            log.info("logs: archive built", file=name, bytes=built.size_bytes, seconds=round(built.seconds, 3))
            where = await self._upload(request, built.path, done=done)
            log.info("logs: uploaded", file=name, to=where, attempts=self.attempts, request_id=rid)
            await self._finish(LogNote(LogStatus.UPLOADED, rid, origin))
        except UploadError as failed:
            log.error("logs: upload failed", status=failed.status, detail=failed.detail, location=shown, request_id=rid)
            await self._finish(LogNote(LogStatus(failed.status), rid, origin, failed.detail))
        except OSError as exc:
            log.error("logs: archive could not be built", error=f"{exc.__class__.__name__}: {exc.strerror or exc}")
            await self._finish(LogNote(LogStatus.UPLOAD_FAILURE, rid, origin, "archive could not be built"))
        except asyncio.CancelledError:
            log.info("logs: upload canceled", request_id=rid)
            raise
        except Exception as exc:  # noqa: BLE001 — whatever failed, the request ends with a final status
            log.error("logs: upload failed", error=f"{exc.__class__.__name__}: {exc}"[:300], location=shown,
                      request_id=rid)
            await self._finish(LogNote(LogStatus.UPLOAD_FAILURE, rid, origin, exc.__class__.__name__))
        finally:
            if job_dir is not None:
                shutil.rmtree(job_dir, ignore_errors=True)

    def _job_dir(self) -> Path:
        """A fresh directory per archive: a canceled job's build thread may still be writing in its own.
        Leftovers of earlier jobs (a crash, a canceled build) are removed."""
        self.work_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
        for old in self.work_dir.iterdir():
            if old.name == JOB_FILE:
                continue
            if old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)
        return Path(tempfile.mkdtemp(prefix="job-", dir=self.work_dir))

    async def _upload(self, request: LogRequest, path: Path, *, done: int = 0) -> str:
        attempts = self._tries(request)
        interval = request.retry_interval_s if request.retry_interval_s is not None else self.default_retry_interval_s
        self.attempts = done
        last: UploadError | None = None
        for attempt in range(done + 1, attempts + 1):
            self.attempts = attempt
            self._update(attempts=attempt)  # counted before it runs: a cut during it spends it
            try:
                # checked again (the name may resolve elsewhere now than when the request was answered);
                # the upload connects to exactly these addresses
                addresses = await resolve_target(request.location, allow_local=self.allow_local_targets)
                return await upload(path, request.location, addresses=addresses, timeout=self.timeout_s,
                                    ca_bundle=self.ca_bundle)
            except UploadError as exc:
                last = exc
                log.warning(f"logs: upload attempt {attempt}/{attempts} failed", status=exc.status, detail=exc.detail)
                if not exc.retry:  # an unusable location (unsupported protocol, CR/LF in an FTP path)
                    break
            if attempt < attempts:
                await asyncio.sleep(max(0.0, float(interval)))
        assert last is not None
        raise UploadError(last.status, f"{self.attempts} attempt(s) failed; last: {last.detail}")


def _request_data(request: LogRequest) -> dict[str, object]:
    return {"location": request.location, "log_type": request.log_type, "request_id": request.request_id,
            "since": request.since.isoformat() if request.since else None,
            "until": request.until.isoformat() if request.until else None,
            "retries": request.retries, "retry_interval_s": request.retry_interval_s, "origin": request.origin}


def _request_from(data: dict[str, object]) -> LogRequest:
    since, until = data.get("since"), data.get("until")
    rid, retries, interval = data.get("request_id"), data.get("retries"), data.get("retry_interval_s")
    return LogRequest(
        location=str(data["location"]), log_type=str(data.get("log_type") or archive.DIAGNOSTICS),
        request_id=int(rid) if isinstance(rid, int) else None,
        since=datetime.fromisoformat(since) if isinstance(since, str) else None,
        until=datetime.fromisoformat(until) if isinstance(until, str) else None,
        retries=int(retries) if isinstance(retries, int) else None,
        retry_interval_s=float(interval) if isinstance(interval, (int, float)) else None,
        origin=str(data.get("origin") or "GetLog"),
    )
