"""`station run`: one asyncio process wiring hardware links → core → OCPP client and IPC.

Every background task is created here and cancelled here on shutdown (SIGTERM/SIGINT),
in reverse order of dependency, so the process stops within a few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import time
from collections.abc import Awaitable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from station import __version__, boot_reason, logs, sdnotify
from station.controller.link import Esp32Link
from station.core.clock import Clock
from station.core.station import StationCore
from station.core.store import Store, StoreError
from station.trust.credentials import Credentials
from station.diagnostics import archive
from station.diagnostics.log_upload import LogUploader
from station.diagnostics.recorder import SEGMENTS, FlightRecorder
from station.trust.firmware import FirmwareStatus, FirmwareUpdater
from station.ipc.server import IpcServer
from station.ocpp.client import OcppClient, link_params
from station.ocpp.endpoints import Endpoints
from station.trust.pki import MANUFACTURER_ROOT

if TYPE_CHECKING:  # the daemon process gets validated values without pydantic (station/handover.py)
    from station.config import Settings
    from station.handover import DaemonSettings

log = structlog.get_logger(__name__)

LOCK_NAME = "station.lock"
"""In STATION_STATE_DIR: held (flock) by the daemon that owns the directory, for its whole life."""


class AlreadyRunning(Exception):
    """Another daemon holds the state directory: this one must not open its database nor write an event."""


def lock_state_dir(state_dir: Path) -> int:
    """Take the state directory's exclusive lock, first of all: the descriptor stays open for the life of the process
    (the kernel releases it when the process ends, however it ends)."""
    Path(state_dir).mkdir(parents=True, exist_ok=True)
    path = Path(state_dir) / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise AlreadyRunning(f"station: another station daemon already runs on {state_dir} (it holds {path}); "
                             "stop it first (systemctl stop station) or give this one its own STATION_STATE_DIR"
                             ) from None
    return fd


def refuse_a_second_daemon_on_the_socket(socket_path: Path) -> None:
    """A daemon with another state directory may already answer on this IPC socket: say so in one line, before
    this one opens its database (the IPC server would refuse the socket only after start-up)."""
    import socket

    if not Path(socket_path).exists():
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(2.0)
        try:
            probe.connect(str(socket_path))
        except OSError:
            return  # a stale socket: the IPC server replaces it
    raise AlreadyRunning(f"station: another station daemon already answers on {socket_path}; stop it first "
                         "(systemctl stop station) or give this one its own STATION_IPC_SOCKET")


class Daemon:
    def __init__(self, settings: Settings | DaemonSettings) -> None:
        self.settings = settings
        self.started_mono = time.monotonic()
        self.store = Store(settings.db_path)
        self.core = StationCore(
            store=self.store,
            clock=Clock(),
            connector_ids=range(1, settings.connectors + 1),
            max_current_a=settings.max_current_a,
            meter_value_seconds=settings.meter_value_seconds,
            has_meter=bool(settings.meter_port),
            measurands=_meter_measurands(settings),
        )
        recorder_mb = int(getattr(settings, "flight_recorder_mb", 0) or 0)
        self.recorder = FlightRecorder(settings.state_dir / "flight-recorder", segments=SEGMENTS,
                                       segment_bytes=recorder_mb * 1024 * 1024 // SEGMENTS,
                                       mask=logs.redact_text) if recorder_mb else None
        ports = [p.strip() for p in settings.esp32_port.split(",") if p.strip()]
        self.links: dict[int, Esp32Link] = {}
        for cid in self.core.connectors:
            link = Esp32Link(
                ports[min(cid, len(ports)) - 1],
                baud=settings.esp32_baud,
                on_status=partial(self.core.on_controller_status, cid),
                on_link=partial(self.core.on_controller_link, cid),
                poll_interval=settings.esp32_poll_seconds,
                link_timeout=settings.esp32_link_timeout_seconds,
                on_raw=partial(self.recorder.esp32, cid) if self.recorder else None,
            )
            self.links[cid] = link
            self.core.attach_controller(cid, link)
        self.meter = self._build_meter(settings)
        params = link_params(settings)
        self.credentials = Credentials(settings.state_dir, params, now=self.core.clock.now,
                                       additional_root_check=settings.additional_root_check)
        roots = self.credentials.roots
        roots.seed(MANUFACTURER_ROOT, settings.manufacturer_roots)
        self.firmware = FirmwareUpdater(
            settings.state_dir, is_idle=self._idle, now=self.core.clock.now,
            manufacturer_roots=lambda: roots.pem(MANUFACTURER_ROOT),
            allow_unsigned=settings.firmware_allow_unsigned)
        self.boot_reason = boot_reason.determine(self.store, settings.state_dir, boot_id=boot_reason.kernel_boot_id())
        self._restart_reason: str | None = None
        """Set when the stop is a planned restart: the next start's BootNotification reason."""
        self.logs = LogUploader(settings.state_dir / "diagnostics", self.archive_sources,
                                station_id=settings.station_name, now=self.core.clock.now,
                                before_build=self.recorder.flush if self.recorder else None,
                                ca_bundle=str(settings.ca_bundle) if settings.ca_bundle else None,
                                allow_local_targets=settings.log_upload_allow_local)
        self.ocpp = OcppClient(params, self.core, heartbeat_seconds=settings.heartbeat_seconds,
                               on_reset=self._reset, firmware=self.firmware, logs=self.logs, recorder=self.recorder,
                               boot_reason=self.boot_reason, credentials=self.credentials,
                               endpoints=Endpoints(params, settings.state_dir))
        self.ipc = IpcServer(settings.ipc_socket, self.core, status=self.status, probe=self.ocpp.probe,
                             diagnostics=self.diagnostics)
        self._last_reading_mono: float | None = None
        """When the meter last gave a valid reading: `--once` must not call a meter healthy that just went quiet."""
        self._bind_meter_facts()
        self._tasks: list[asyncio.Task[Any]] = []
        self._stop: asyncio.Event | None = None

    def _bind_meter_facts(self) -> None:
        """The energy meter's facts in the device model (FiscalMetering); none without a meter."""
        meter = self.meter
        if meter is None:
            return
        model = self.core.device_model
        model.set_default("FiscalMetering", "Model", str(self.settings.meter_model).upper())
        model.bind("FiscalMetering", "Problem", get=lambda _: not meter.healthy)

    def _idle(self) -> bool:
        """No transaction runs: a remote update may restart the daemon now."""
        return not any(c.transaction for c in self.core.connectors.values())

    async def _reset(self, kind: str) -> None:
        """A CSMS Reset: stop cleanly; systemd (Restart=always) starts the daemon again."""
        log.warning("restarting on the CSMS's request", kind=kind)
        self._restart_reason = "RemoteReset"
        if self._stop is not None:
            self._stop.set()

    def _build_meter(self, settings: Settings | DaemonSettings) -> Any:
        if not settings.meter_port:
            log.info("no energy meter configured: transactions will report no energy")
            return None
        from station.meter.client import ModbusMeter
        from station.meter.registers import MAPS

        return ModbusMeter(
            settings.meter_port,
            register_map=MAPS[settings.meter_model],
            unit=settings.meter_unit,
            baud=settings.meter_baud,
            poll_interval=settings.meter_poll_seconds,
            on_reading=self._on_meter_reading,
            on_health=self.core.on_meter_health,
        )

    def _on_meter_reading(self, reading: Any) -> None:
        self._last_reading_mono = time.monotonic()
        if self.recorder is not None:
            self.recorder.meter(1, reading)
        self.core.on_meter_reading(reading)

    def status(self) -> dict[str, Any]:
        """Daemon-level facts for IPC `status` (merged with the core's snapshot there)."""
        return {
            "station_id": self.settings.station_name,
            "software_version": __version__,
            "uptime_s": round(time.monotonic() - self.started_mono, 1),
            "ocpp": self.ocpp.status(),
            "outbox_by_kind": self._outbox_kinds(),
            "firmware": {"status": self.firmware.status.value, "request_id": self.firmware.current().request_id},
            "esp32": {
                str(cid): {
                    "port": link.port if hasattr(link, "port") else None,
                    "link_up": link.link_up,
                    "firmware": link.firmware,
                    "warnings": link.warnings,
                    "stats": _as_dict(link.stats),
                }
                for cid, link in self.links.items()
            },
            "meter": None if self.meter is None else {
                "port": self.settings.meter_port,
                "model": self.settings.meter_model,
                "unit": self.settings.meter_unit,  # the Modbus address and speed a technician checks first
                "baud": self.settings.meter_baud,
                "healthy": self.meter.healthy,
                "last_error": self.meter.last_error,
                "stats": _as_dict(self.meter.stats),
                "last_reading_age_s": None if self._last_reading_mono is None
                else round(time.monotonic() - self._last_reading_mono, 2),
                "stale_after_s": round(2 * self.meter.poll_interval + self.meter.timeout, 2),
            },
        }

    def _outbox_kinds(self) -> dict[str, int] | None:
        try:
            return self.store.outbox_kinds()
        except Exception:  # noqa: BLE001 — a broken store must not break a status read
            return None

    # ---- diagnostics (GetLog, GetDiagnostics, `station report`) ----------------------------
    def config_dump(self) -> dict[str, Any]:
        """The effective configuration and the device model (secrets masked there too; the archive masks again)."""
        settings = self.settings
        names = getattr(type(settings), "model_fields", None)
        values = {name: getattr(settings, name) for name in names} if names else dict(vars(settings))
        try:
            device_model: Any = self.core.device_model.snapshot()
        except Exception as exc:  # noqa: BLE001 — an unreadable model must not cost the archive
            device_model = f"(unreadable: {exc.__class__.__name__})"
        endpoints = self.ocpp.endpoints
        profiles: dict[str, Any] = {}
        if endpoints is not None:
            profiles = {"in_use": endpoints.describe(endpoints.slot), "stored": endpoints.file.load().to_json(),
                        "history": endpoints.file.history(50)}
        return {"settings": values, "device_model": device_model, "network_profiles": profiles}

    def snapshot(self) -> dict[str, Any]:
        return {**self.core.snapshot(), **self.status()}

    def security_lines(self, since: Any, until: Any) -> list[str]:
        """The local security log in the window, read here in the event loop (the store is not
        shared with the archive's worker thread)."""
        return list(self.core.security_events.export_lines(since, until))

    def diagnostics(self, since: str | None, until: str | None) -> dict[str, Any]:
        """For `station report` over IPC: the recorder flushed to disk, the masked configuration,
        the snapshot and the security log in the window."""
        from station.ocpp.base import parse_time

        if self.recorder is not None:
            self.recorder.flush()
        lines = self.security_lines(parse_time(since) if since else None, parse_time(until) if until else None)
        return {"config": archive.mask_config(self.config_dump()), "snapshot": self.snapshot(), "security": lines,
                "recorder": str(self.recorder.directory) if self.recorder else None}

    def archive_sources(self, since: Any = None, until: Any = None) -> archive.Sources:
        lines = self.security_lines(since, until)
        return archive.Sources(
            station_id=self.settings.station_name, config=self.config_dump(), snapshot=self.snapshot(),
            recorder_lines=self.recorder.lines if self.recorder else None,
            log_file=getattr(self.settings, "log_file", None),
            security_lines=lambda _since, _until: lines,
            mask=logs.redact_text,
        )
    def _record_startup(self) -> None:
        """StartupOfTheDevice: says whether the computer booted or only the daemon restarted."""
        boot_id = boot_reason.kernel_boot_id()
        previous = self.store.get("security:kernel_boot_id")
        what = "daemon restarted" if boot_id and boot_id == previous else "device booted"
        self.core.security_events.record("StartupOfTheDevice", f"{what}; station software {__version__}")
        if boot_id and boot_id != previous:
            with contextlib.suppress(StoreError):
                self.store.put("security:kernel_boot_id", boot_id)

    def _record_shutdown(self) -> None:
        """A clean stop; a CSMS Reset or a handed-over firmware update names the next start's reason."""
        planned = self._restart_reason
        if planned is None and self.firmware.status == FirmwareStatus.INSTALLING:
            planned = "FirmwareUpdate"
        with contextlib.suppress(StoreError):
            boot_reason.record_shutdown(self.store, next_reason=planned)

    def _spawn(self, coro: Awaitable[Any], name: str) -> None:
        self._tasks.append(asyncio.ensure_future(coro))
        self._tasks[-1].set_name(name)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.core.tick()

    async def run(self, stop: asyncio.Event) -> None:
        self._stop = stop
        log.info("station starting", station_id=self.settings.station_name, version=__version__,
                 connectors=len(self.core.connectors), state_dir=str(self.settings.state_dir))
        self._record_startup()
        log.info("boot reason", reason=self.boot_reason)
        with contextlib.suppress(StoreError):
            boot_reason.record_start(self.store, self.settings.state_dir, boot_id=boot_reason.kernel_boot_id())
        await self.ipc.start()
        for cid, link in self.links.items():
            self._spawn(link.run(), f"esp32-{cid}")
        if self.meter is not None:
            self._spawn(self.meter.run(), "meter")
        self._spawn(self.ocpp.run(), "ocpp")
        self._spawn(self._tick(), "tick")
        self._spawn(self.core.monitoring.run(), "monitoring")
        interval = sdnotify.watchdog_interval()
        if interval is not None:
            self._spawn(sdnotify.watchdog_task(interval), "watchdog")
        sdnotify.ready()
        waiter = asyncio.ensure_future(stop.wait())
        try:
            done, _ = await asyncio.wait([waiter, *self._tasks], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not waiter and not task.cancelled() and task.exception():
                    log.error("background task failed", task=task.get_name(), exc_info=task.exception())
        finally:
            sdnotify.stopping()
            log.info("station stopping")
            waiter.cancel()
            await self.ocpp.drain()  # bounded: answers to calls in flight, nothing new sent
            for task in reversed(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self.ipc.close()
            await self.core.close()
            self._record_shutdown()
            self.store.close()
            if self.recorder is not None:
                self.recorder.close()
            log.info("station stopped")


def _meter_measurands(settings: Settings | DaemonSettings) -> frozenset[str]:
    """What the configured meter measures (its register map); nothing without a meter."""
    if not settings.meter_port:
        return frozenset()
    from station.meter.registers import MAPS, measurands

    return measurands(MAPS[settings.meter_model])


def _as_dict(stats: Any) -> dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(stats) if dataclasses.is_dataclass(stats) else dict(vars(stats))


async def serve(settings: Settings | DaemonSettings) -> int:
    """Run until SIGTERM/SIGINT; 0 on a clean stop. Raises AlreadyRunning before touching the state directory."""
    lock = lock_state_dir(settings.state_dir)
    try:
        refuse_a_second_daemon_on_the_socket(settings.ipc_socket)
    except AlreadyRunning:
        os.close(lock)
        raise
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        daemon = Daemon(settings)
        await daemon.run(stop)
    finally:
        os.close(lock)
    return 0
