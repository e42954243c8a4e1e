"""Shared helpers for the OCPP tests: a minimal station session over the real link."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from station.core.clock import Clock
from station.core.station import StationCore
from station.core.store import Store
from station.trust.credentials import Credentials
from station.devtools.csms import DevCsms, Received
from station.trust.firmware import FirmwareUpdater
from station.ocpp.client import OcppClient
from station.ocpp.connection import LinkParams
from station.ocpp.rpc import StrictChargePoint
from tests.aio import eventually
from tests.core_helpers import RecordingController

BOOT_201 = {"chargingStation": {"model": "AC22", "vendorName": "Orge"}, "reason": "PowerUp"}
BOOT_16 = {"chargePointModel": "AC22", "chargePointVendor": "Orge"}


def boot_payload(version: str) -> dict[str, Any]:
    return BOOT_201 if version == "201" else BOOT_16


def booting_session(
    station_id: str, sessions: list[str] | None = None
) -> Callable[[Any, str], Awaitable[None]]:
    """A session callback that boots once per connection and then serves CSMS calls."""

    async def on_session(ws: Any, version: str) -> None:
        cp = StrictChargePoint(station_id, ws, version)
        serving = asyncio.create_task(cp.start())
        try:
            await cp.request("BootNotification", boot_payload(version), timeout=5)
            if sessions is not None:
                sessions.append(version)
            await serving
        finally:
            serving.cancel()

    return on_session


# --------------------------------------------------------------------------- full station rig
FAST_LINK = {"backoff_min": 0.01, "backoff_max": 0.05, "open_timeout": 2}


@dataclass
class Rig:
    """A station (real core + SQLite + recording controller) linked to a real dev CSMS."""

    version: str
    csms: DevCsms
    db: Path
    station_id: str = "CP"
    core: StationCore | None = None
    esp: RecordingController | None = None
    client: OcppClient | None = None
    task: asyncio.Task[None] | None = None
    resets: list[str] = field(default_factory=list)
    clock: Clock | None = None
    firmware: FirmwareUpdater | None = None
    """Remote update (UpdateFirmware) handler; None: refused."""
    logs: Any = None
    """Log uploads (GetLog / GetDiagnostics), a LogUploader; None: refused."""
    state_dir: Path | None = None
    """Where the station keeps credentials and certificates; None: fixed link parameters."""
    link: dict[str, Any] = field(default_factory=dict)
    """Extra LinkParams (password, ca_bundle, client_cert, client_key, security_profile)."""
    credentials: Credentials | None = None
    credential_options: dict[str, Any] = field(default_factory=dict)
    """Extra Credentials arguments (additional_root_check...)."""

    def params(self) -> LinkParams:
        return LinkParams(self.station_id, primary=self.version, url_201=self.csms.url("201"), url_16=self.csms.url("16"),
                          **{**FAST_LINK, **self.link})

    async def start(self, *, trusted: bool = True) -> Rig:
        self.clock = Clock(trusted=trusted)
        self.core = StationCore(store=Store(self.db), clock=self.clock)
        self.esp = RecordingController(self.core)
        self.core.attach_controller(1, self.esp)
        self.core.on_controller_status(1, self.esp.current)

        async def on_reset(kind: str) -> None:
            self.resets.append(kind)

        if self.state_dir is not None:
            self.credentials = Credentials(self.state_dir, self.params(), **self.credential_options)
        self.client = OcppClient(self.params(), self.core, boot_retry_seconds=0.05, response_timeout=3, on_reset=on_reset,
                                 firmware=self.firmware, credentials=self.credentials, logs=self.logs)
        self.task = asyncio.create_task(self.client.run())
        return self

    async def stop(self) -> None:
        """Stop the station like a power cut after the last commit: nothing graceful is sent."""
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await self.task
        if self.core is not None:
            await self.core.close()
            self.core.store.close()
        self.task = None

    def calls(self, action: str) -> list[Received]:
        return self.csms.calls(action, station_id=self.station_id)

    async def settle(self) -> None:
        for _ in range(5):
            await asyncio.sleep(0)

    async def wait_outbox_empty(self, timeout: float = 10) -> None:
        assert self.core is not None
        core = self.core
        await eventually(lambda: core.store.outbox_depth() == 0, timeout)


@contextlib.asynccontextmanager
async def rig_on_dev_csms(version: str, db: Path, *, heartbeat_interval: int = 300) -> AsyncIterator[Rig]:
    """A station rig on a fresh dev CSMS, past its first StatusNotification."""
    async with DevCsms(heartbeat_interval=heartbeat_interval) as csms:
        rig = await Rig(version, csms, db).start()
        try:
            await csms.wait_for("StatusNotification", timeout=10)
            yield rig
        finally:
            await rig.stop()


async def started_rig(version: str, csms: DevCsms, directory: Path, **link: Any) -> Rig:
    """A rig with a credential store under `directory`, past the StatusNotification of this start."""
    rig = Rig(version, csms, directory / "station.db", state_dir=directory / "state", link=link)
    mark = csms.mark()
    await rig.start()
    await csms.wait_for("StatusNotification", since=mark, timeout=10)
    return rig
