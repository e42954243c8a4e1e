"""Builders for core tests: controller reports and a recording controller for the core's unit tests."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from station.core.clock import Clock
from station.core.model import ControllerState, ControllerStatus, PilotState
from station.core.ports import ControllerError
from station.core.station import StationCore
from station.core.store import Store


def report(
    pilot: str = "A",
    state: ControllerState = ControllerState.IDLE,
    *,
    relay: bool = False,
    auth: bool = False,
    max_a: int = 32,
    **kw: object,
) -> ControllerStatus:
    return ControllerStatus(
        pilot=PilotState(pilot), state=state, relay_closed=relay, authorized=auth, max_current_a=max_a,
        cable_current_a=32, **kw,  # type: ignore[arg-type]
    )


class RecordingController:
    """Stands in for the ESP32 in core unit tests: records commands, answers like the firmware."""

    def __init__(self, core: object, connector_id: int = 1) -> None:
        self.core = core
        self.connector_id = connector_id
        self.commands: list[tuple[str, int | None]] = []
        self.current = ControllerStatus(PilotState.A, ControllerState.IDLE, False, False, 32, 32)
        self.fail = False

    link_up = True
    firmware = "test"

    @classmethod
    def attached(cls, core: object, connector_id: int = 1) -> RecordingController:
        """A controller attached to `core` that has sent its first status report."""
        controller = cls(core, connector_id)
        core.attach_controller(connector_id, controller)  # type: ignore[attr-defined]
        core.on_controller_status(connector_id, controller.current)  # type: ignore[attr-defined]
        return controller

    def _emit(self, **changes: object) -> None:
        self.current = dataclasses.replace(self.current, **changes)  # type: ignore[arg-type]
        self.core.on_controller_status(self.connector_id, self.current)  # type: ignore[attr-defined]

    async def authorize(self) -> None:
        self.commands.append(("authorize", None))
        if self.fail:
            raise ControllerError("not confirmed")
        charging = self.current.pilot in (PilotState.C, PilotState.D)
        self._emit(authorized=True, relay_closed=charging,
                   state=ControllerState.CHARGING if charging else ControllerState.READY)

    async def stop_charging(self) -> None:
        self.commands.append(("stop", None))
        self._emit(authorized=False, relay_closed=False, state=ControllerState.STOPPED)

    async def set_max_current(self, amps: int) -> None:
        self.commands.append(("current", amps))
        self._emit(max_current_a=amps)

    async def request_status(self) -> ControllerStatus:
        return self.current

    # the simulated vehicle
    def plug(self) -> None:
        self._emit(pilot=PilotState.B, state=ControllerState.EV_CONNECTED)

    def ev_requests_charge(self) -> None:
        on = self.current.authorized
        self._emit(pilot=PilotState.C, relay_closed=on, state=ControllerState.CHARGING if on else self.current.state)

    def unplug(self) -> None:
        self._emit(pilot=PilotState.A, relay_closed=False, authorized=False, state=ControllerState.IDLE)


# --- fixtures: import them into a test module (`from tests.core_helpers import core, esp, store`) ---
@pytest.fixture
def store(tmp_path: Path) -> Store:
    """A real SQLite store in the test's directory."""
    return Store(tmp_path / "station.db")


@pytest.fixture
async def core(store: Store) -> AsyncIterator[StationCore]:
    """One connector, a trusted clock, closed after the test."""
    core = StationCore(store=store, clock=Clock(trusted=True))
    yield core
    await core.close()


@pytest.fixture
async def esp(core: StationCore) -> RecordingController:
    return RecordingController.attached(core)


async def settle() -> None:
    """Let the actuator tasks and the controller's answers run."""
    for _ in range(5):
        await asyncio.sleep(0)
