"""Shared helpers for the OCPP tests: a minimal station session over the real link."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from station.ocpp.rpc import StrictChargePoint

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


async def eventually(condition: Callable[[], bool], timeout: float = 5) -> None:
    """Wait until `condition()` holds (polling; for state owned by another task)."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)
