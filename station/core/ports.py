"""Interfaces between the core and the hardware links.

The core depends only on these protocols; `station.controller` and
`station.meter` implement them. Data flows up through the callbacks given to
the links; commands flow down through the methods.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from station.core.model import ControllerStatus, MeterReading

StatusCallback = Callable[[ControllerStatus], Awaitable[None] | None]
LinkCallback = Callable[[bool, str], Awaitable[None] | None]
"""Called with (link_up, reason) whenever the link goes up or down."""
ReadingCallback = Callable[[MeterReading], Awaitable[None] | None]
MeterHealthCallback = Callable[[bool, str], None]
"""Called with (healthy, reason) when the meter's verdict changes: a dead meter is a problem, not a silence."""


class ControllerError(Exception):
    """A command the charge controller did not confirm (after retries) or could not be sent."""


class ChargeController(Protocol):
    """One charge controller driving one connector (relay, pilot, cable lock)."""

    @property
    def link_up(self) -> bool: ...

    @property
    def firmware(self) -> str | None: ...

    async def authorize(self) -> None:
        """Allow the controller to close the relay when the EV asks for charge."""

    async def stop_charging(self) -> None:
        """Open the relay and end charging."""

    async def set_max_current(self, amps: int) -> None:
        """Set the pilot's current limit (6..32 A); raises ControllerError if refused."""

    async def request_status(self) -> ControllerStatus | None:
        """Ask for a fresh status now; None if the link is down."""


class EnergyMeter(Protocol):
    @property
    def healthy(self) -> bool: ...

    @property
    def last_reading(self) -> MeterReading | None: ...
