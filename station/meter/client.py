"""Modbus RTU energy meter client: polls a meter and hands validated readings to the core.

Billing depends on these numbers, so the rules are strict: a failed or
implausible poll produces no reading at all (never zeros), and an energy
register that goes backwards is flagged and withheld rather than passed on.
"""

from __future__ import annotations

import asyncio
import inspect
import os
from dataclasses import dataclass, replace
from datetime import datetime, timezone

import structlog
from pymodbus.client import AsyncModbusSerialClient
from pymodbus.exceptions import ModbusException
from pymodbus.framer import FramerType

from station.core.model import MeterReading
from station.core.ports import MeterHealthCallback, ReadingCallback
from station.meter.registers import RegisterMap

log = structlog.get_logger(__name__)

PHASES = ("l1", "l2", "l3")


class MeterReadError(Exception):
    """One poll could not produce a trustworthy reading."""


@dataclass(frozen=True, slots=True)
class MeterStats:
    """Counters for status output and metrics."""

    polls_ok: int = 0
    polls_failed: int = 0
    consecutive_failures: int = 0
    non_monotonic: int = 0
    reconnects: int = 0


def effective_parity(port: str, parity: str) -> str:
    """The parity to request from the serial driver for `port`.

    A pseudo-terminal carries no parity bits and Linux refuses PARENB on it
    (tcsetattr fails with EINVAL), so on a pty (the simulator) parity is not
    requested. Real RS-485 adapters get the configured parity unchanged.
    """
    if parity != "N" and os.path.realpath(port).startswith("/dev/pts/"):
        return "N"
    return parity


class ModbusMeter:
    """Polls one Modbus RTU meter until cancelled; implements `EnergyMeter`.

    Each poll reads the map's register blocks; a failed poll is retried up to
    `retries` times, then counted. After `unhealthy_after` consecutive failed
    polls `healthy` turns False until a poll succeeds again. When the port
    disappears (USB adapter unplugged) it is reopened with backoff.
    """

    def __init__(
        self,
        port: str,
        *,
        register_map: RegisterMap,
        unit: int = 1,
        baud: int = 9600,
        parity: str = "E",
        poll_interval: float = 1.0,
        on_reading: ReadingCallback,
        retries: int = 2,
        timeout: float = 1.0,
        unhealthy_after: int = 3,
        reconnect_max: float = 10.0,
        on_health: MeterHealthCallback | None = None,
    ) -> None:
        if parity not in ("N", "E", "O"):
            raise ValueError("parity must be N, E or O")
        if poll_interval <= 0 or timeout <= 0:
            raise ValueError("poll_interval and timeout must be positive")
        if retries < 0 or unhealthy_after < 1:
            raise ValueError("retries must be >= 0 and unhealthy_after >= 1")
        self.port = port
        self.map = register_map
        self.unit = unit
        self.baud = baud
        self.parity = parity
        self.poll_interval = poll_interval
        self.retries = retries
        self.timeout = timeout
        self.unhealthy_after = unhealthy_after
        self.reconnect_max = reconnect_max
        self._on_reading = on_reading
        self._on_health = on_health
        self._verdict: bool | None = None
        """Last health told to `on_health`: None until the first reading or the first run of failures."""
        self._last_error: str | None = None
        self._client: AsyncModbusSerialClient | None = None
        self._last: MeterReading | None = None
        self._accepted_import_wh: float | None = None
        self._accepted_export_wh: float | None = None
        self._stats = MeterStats()
        self._healthy = False
        self._open_failures = 0
        self._opened = False
        self._backwards_streak = 0
        self._log = log.bind(port=port, model=register_map.model, unit=unit)

    # -- EnergyMeter -------------------------------------------------------

    @property
    def healthy(self) -> bool:
        """True once a reading came through and fewer than N polls in a row failed since."""
        return self._healthy

    @property
    def last_reading(self) -> MeterReading | None:
        return self._last

    @property
    def stats(self) -> MeterStats:
        return self._stats

    @property
    def last_error(self) -> str | None:
        """Why the last failed poll failed (kept after recovery, for the status)."""
        return self._last_error

    # -- loop --------------------------------------------------------------

    async def run(self) -> None:
        """Poll at a fixed rate until cancelled; never raises for meter or port trouble."""
        loop = asyncio.get_running_loop()
        next_poll = loop.time()
        try:
            while True:
                _raise_if_cancel_was_swallowed()
                if not await self._ensure_open():
                    self._record_failure("port unavailable")
                    await asyncio.sleep(self._reopen_delay())
                    next_poll = loop.time()
                    continue
                await self.poll_once()
                next_poll += self.poll_interval
                now = loop.time()
                if next_poll < now:  # overran (slow meter, retries): don't try to catch up
                    next_poll = now
                await asyncio.sleep(next_poll - now)
        finally:
            self._close()

    async def poll_once(self) -> MeterReading | None:
        """One poll with retries; returns the reading passed on, or None."""
        error = ""
        for attempt in range(self.retries + 1):
            _raise_if_cancel_was_swallowed()
            if not self._connected():
                error = "port closed"
                break
            try:
                reading = await self._read()
            except MeterReadError as exc:
                error = str(exc)
                self._log.debug("meter.read_failed", attempt=attempt + 1, error=error)
                continue
            return await self._accept(reading)
        self._record_failure(error)
        if not self._connected():
            self._close()
        return None

    async def probe(self) -> MeterReading:
        """One reading now, port opened and closed again (`station --once` without the daemon).

        Nothing is published; raises MeterReadError saying why there is no trustworthy reading.
        """
        try:
            if not await self._ensure_open():
                raise MeterReadError(f"cannot open {self.port}")
            error = "no answer"
            for _ in range(self.retries + 1):
                try:
                    return await self._read()
                except MeterReadError as exc:
                    error = str(exc)
            raise MeterReadError(error)
        finally:
            self._close()

    # -- internals ---------------------------------------------------------

    async def _read(self) -> MeterReading:
        assert self._client is not None
        values: dict[str, float] = {}
        for block in self.map.blocks:
            try:
                response = await self._client.read_holding_registers(
                    block.address, count=block.count, device_id=self.unit
                )
            except (ModbusException, OSError) as exc:
                raise MeterReadError(f"read {block.address:#06x}+{block.count}: {exc}") from exc
            if response.isError():
                raise MeterReadError(f"read {block.address:#06x}+{block.count}: meter answered {response}")
            try:
                values.update(self.map.decode(block, response.registers))
            except ValueError as exc:
                raise MeterReadError(f"decode {block.address:#06x}: {exc}") from exc
        return self._to_reading(values)

    def _to_reading(self, v: dict[str, float]) -> MeterReading:
        def phases(prefix: str) -> tuple[float, float, float] | None:
            names = [f"{prefix}_{p}" for p in PHASES]
            if all(n in v for n in names):
                return (v[names[0]], v[names[1]], v[names[2]])
            return None

        power = v.get("power_total")
        per_phase_power = phases("power")
        if power is None and per_phase_power is not None:
            power = sum(per_phase_power)
        if v["energy_import"] < 0 or v.get("energy_export", 0.0) < 0:
            raise MeterReadError("negative energy register")
        return MeterReading(
            energy_import_wh=v["energy_import"],
            power_w=power,
            current_a=phases("current"),
            voltage_v=phases("voltage"),
            frequency_hz=v.get("frequency"),
            power_factor=v.get("power_factor"),
            energy_export_wh=v.get("energy_export"),
            taken_at=datetime.now(timezone.utc),
        )

    async def _accept(self, reading: MeterReading) -> MeterReading | None:
        """Count the poll as good, enforce monotonic energy, then publish."""
        was_failing = self._stats.consecutive_failures
        self._stats = replace(
            self._stats, polls_ok=self._stats.polls_ok + 1, consecutive_failures=0
        )
        if not self._healthy:
            self._healthy = True
            self._log.info("meter.healthy", after_failed_polls=was_failing)
        elif was_failing:
            self._log.info("meter.recovered", after_failed_polls=was_failing)
        self._tell_health(True, "valid reading")
        backwards = _went_backwards(self._accepted_import_wh, reading.energy_import_wh) or _went_backwards(
            self._accepted_export_wh, reading.energy_export_wh
        )
        if backwards:
            self._stats = replace(self._stats, non_monotonic=self._stats.non_monotonic + 1)
            self._backwards_streak += 1
            # Loud on the first of a streak, then once a minute-ish: a replaced meter would
            # otherwise log every poll until an operator resets the baseline.
            emit = self._log.warning if self._backwards_streak % 60 == 1 else self._log.debug
            emit(
                "meter.energy_went_backwards",
                import_wh=reading.energy_import_wh,
                last_import_wh=self._accepted_import_wh,
                export_wh=reading.energy_export_wh,
                last_export_wh=self._accepted_export_wh,
                count=self._stats.non_monotonic,
            )
            return None
        self._backwards_streak = 0
        self._accepted_import_wh = reading.energy_import_wh
        if reading.energy_export_wh is not None:
            self._accepted_export_wh = reading.energy_export_wh
        self._last = reading
        await self._publish(reading)
        return reading

    async def _publish(self, reading: MeterReading) -> None:
        try:
            result = self._on_reading(reading)
            if inspect.isawaitable(result):
                await result
        except asyncio.CancelledError:
            raise
        except Exception:
            self._log.exception("meter.callback_failed")

    def _record_failure(self, error: str) -> None:
        s = self._stats
        self._stats = replace(
            s, polls_failed=s.polls_failed + 1, consecutive_failures=s.consecutive_failures + 1
        )
        n = self._stats.consecutive_failures
        self._last_error = error
        if n == 1:
            self._log.warning("meter.poll_failed", error=error)
        else:
            self._log.debug("meter.poll_failed", error=error, consecutive=n)
        if n >= self.unhealthy_after and self._verdict is not False:
            # Also when it never answered since start: a meter dead from the start is a problem too.
            self._healthy = False
            self._log.warning("meter.unhealthy", consecutive_failures=n, error=error)  # the core logs the ERROR
            self._tell_health(False, f"{n} polls in a row failed: {error}")

    def _tell_health(self, healthy: bool, reason: str) -> None:
        if self._verdict is healthy:
            return
        self._verdict = healthy
        if self._on_health is None:
            return
        try:
            self._on_health(healthy, reason)
        except Exception:  # noqa: BLE001 — an observer must not stop the polling
            self._log.exception("meter.health_callback_failed")

    def _connected(self) -> bool:
        return self._client is not None and self._client.connected

    async def _ensure_open(self) -> bool:
        if self._connected():
            return True
        self._close()
        parity = effective_parity(self.port, self.parity)
        client = AsyncModbusSerialClient(
            self.port,
            framer=FramerType.RTU,
            baudrate=self.baud,
            bytesize=8,
            parity=parity,
            stopbits=1,
            timeout=self.timeout,
            retries=0,  # retried here, per poll, so failures are counted once
            reconnect_delay=0,  # reopened here, with our own backoff and logging
            name=f"meter:{self.port}",
        )
        if not await client.connect():
            client.close()
            self._open_failures += 1
            if self._open_failures == 1:
                self._log.warning("meter.port_unavailable")
            return False
        self._client = client
        if self._opened:
            self._stats = replace(self._stats, reconnects=self._stats.reconnects + 1)
        self._opened = True
        self._log.info("meter.port_open", parity=parity, baud=self.baud, after_attempts=self._open_failures + 1)
        self._open_failures = 0
        return True

    def _reopen_delay(self) -> float:
        return min(self.reconnect_max, self.poll_interval * 2 ** min(self._open_failures - 1, 10))

    def _close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def _raise_if_cancel_was_swallowed() -> None:
    """Honour a cancellation that a library call swallowed.

    On Python 3.11, asyncio.wait_for (used inside pymodbus for every request)
    drops a cancellation that arrives just as the response does; without this
    check the poll loop would run on after its owner cancelled it and block
    shutdown. The request stays visible through Task.cancelling().
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _went_backwards(accepted: float | None, new: float | None) -> bool:
    return accepted is not None and new is not None and new < accepted

