"""Specification of the ESP32 link, run against the simulator as a real subprocess on a real pty."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import serial

from station.controller.link import Esp32Link
from tests.aio import running
from station.controller.simulator import SimulatorProcess
from station.core.model import ControllerState, ControllerStatus, PilotState
from station.core.ports import ChargeController, ControllerError

WAIT = 8.0  # generous upper bound for conditions; tests never assert on durations


@dataclass
class Recorder:
    """Collects what the link reports to the core, and lets tests wait for a condition."""

    statuses: list[ControllerStatus] = field(default_factory=list)
    links: list[tuple[bool, str]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def on_status(self, status: ControllerStatus) -> None:
        self.statuses.append(status)
        self.changed.set()

    async def on_link(self, up: bool, reason: str) -> None:  # async on purpose: both kinds must work
        self.links.append((up, reason))
        self.changed.set()

    async def until(self, predicate: Callable[[], bool], timeout: float = WAIT) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

    async def status_where(self, predicate: Callable[[ControllerStatus], bool]) -> ControllerStatus:
        await self.until(lambda: bool(self.statuses) and predicate(self.statuses[-1]))
        return self.statuses[-1]


@contextlib.asynccontextmanager
async def setup(
    tmp_path: Path, *, sim_interval: float = 30.0, **link_kwargs: Any
) -> AsyncIterator[tuple[SimulatorProcess, Esp32Link, Recorder]]:
    """Simulator (unsolicited lines only every 30 s, so freshness must come from polling) + link."""
    rec = Recorder()
    kwargs: dict[str, Any] = {"poll_interval": 0.1, "link_timeout": 1.0, "reopen_backoff": (0.05, 0.3),
                              "confirm_timeout": 0.5, **link_kwargs}
    async with SimulatorProcess(tmp_path, interval=sim_interval) as sim:
        link = Esp32Link(str(sim.port), on_status=rec.on_status, on_link=rec.on_link, **kwargs)
        async with running(link.run()):
            await rec.until(lambda: link.link_up)
            yield sim, link, rec


async def plugged_and_connected(sim: SimulatorProcess, rec: Recorder) -> None:
    await sim.command("plug")
    await rec.status_where(lambda s: s.state is ControllerState.EV_CONNECTED)


def test_link_satisfies_the_charge_controller_port() -> None:
    link: ChargeController = Esp32Link("/dev/null", on_status=lambda s: None, on_link=lambda u, r: None)
    assert link.link_up is False and link.firmware is None


async def test_first_status_is_reported_when_the_link_comes_up(tmp_path: Path) -> None:
    async with setup(tmp_path) as (_, link, rec):
        assert rec.links == [(True, f"valid status frame on {link.port}")]
        assert rec.statuses[0].state is ControllerState.IDLE and rec.statuses[0].pilot is PilotState.A
        assert link.last_status == rec.statuses[-1]


async def test_state_changes_reach_on_status_through_polling(tmp_path: Path) -> None:
    async with setup(tmp_path) as (sim, _, rec):
        await sim.command("plug")
        status = await rec.status_where(lambda s: s.pilot is PilotState.B)
        assert status.state in (ControllerState.CABLE_DETECT, ControllerState.EV_CONNECTED)
        assert status.cable_current_a == 32


async def test_full_session_plug_authorize_charge_pause_stop_unplug(tmp_path: Path) -> None:
    async with setup(tmp_path) as (sim, link, rec):
        await plugged_and_connected(sim, rec)
        await link.set_max_current(16)
        await link.authorize()
        await rec.status_where(lambda s: s.state is ControllerState.READY)
        await sim.command("ev_charge")
        charging = await rec.status_where(lambda s: s.state is ControllerState.CHARGING)
        assert charging.relay_closed and charging.pilot is PilotState.C and charging.max_current_a == 16
        assert (await sim.command("state"))["charging_current_a"] == 16
        await sim.command("ev_pause")
        await rec.status_where(lambda s: s.state is ControllerState.PAUSED and not s.relay_closed)
        await link.stop_charging()
        await rec.status_where(lambda s: s.state is ControllerState.STOPPED)
        await sim.command("unplug")
        await rec.status_where(lambda s: s.state is ControllerState.IDLE and not s.authorized)


async def test_authorize_is_confirmed_by_auth_flag(tmp_path: Path) -> None:
    async with setup(tmp_path) as (sim, link, rec):
        await plugged_and_connected(sim, rec)
        await link.authorize()
        assert link.last_status is not None and link.last_status.authorized
        assert link.stats.commands_sent == 1 and link.stats.command_failures == 0
        assert "AUTHORIZE" in (await sim.command("state"))["commands"]


async def test_slow_controller_is_confirmed_on_a_retry(tmp_path: Path) -> None:
    async with setup(tmp_path, confirm_timeout=0.3, link_timeout=5.0) as (sim, link, rec):
        await plugged_and_connected(sim, rec)
        await sim.command("slow", seconds=0.45)
        await link.authorize()
        assert link.stats.commands_sent >= 2 and link.stats.command_failures == 0


async def test_unanswered_command_is_retried_then_raises_controller_error(tmp_path: Path) -> None:
    async with setup(tmp_path, confirm_timeout=0.2, command_retries=3, link_timeout=5.0) as (sim, link, rec):
        await plugged_and_connected(sim, rec)
        await sim.command("silence", seconds=3)
        with pytest.raises(ControllerError, match="did not confirm 'authorize'.*after 3 attempt"):
            await link.authorize()
        assert link.stats.commands_sent == 3 and link.stats.command_failures == 1


async def test_set_max_current_while_charging_is_refused_without_sending(tmp_path: Path) -> None:
    async with setup(tmp_path) as (sim, link, rec):
        await plugged_and_connected(sim, rec)
        await link.authorize()
        await sim.command("ev_charge")
        await rec.status_where(lambda s: s.state is ControllerState.CHARGING)
        sent = link.stats.commands_sent
        with pytest.raises(ControllerError, match="while charging"):
            await link.set_max_current(10)
        assert link.stats.commands_sent == sent
        assert "SET_MAX_CURRENT" not in (await sim.command("state"))["commands"]


async def test_out_of_range_current_is_a_controller_error_and_never_sent(tmp_path: Path) -> None:
    async with setup(tmp_path) as (_, link, _rec):
        with pytest.raises(ControllerError, match="6..32"):
            await link.set_max_current(33)
        assert link.stats.commands_sent == 0


async def test_command_while_link_down_fails_fast_with_reason(tmp_path: Path) -> None:
    async with setup(tmp_path, link_timeout=0.4) as (sim, link, rec):
        await sim.command("silence", seconds=3)
        await rec.until(lambda: not link.link_up)
        with pytest.raises(ControllerError, match="link to the ESP32 is down"):
            await link.authorize()
        assert await link.request_status() is None


async def test_request_status_returns_a_fresh_status(tmp_path: Path) -> None:
    async with setup(tmp_path) as (sim, link, _rec):
        await sim.command("plug")
        status = await link.request_status()
        assert status is not None and status.pilot is PilotState.B


async def test_silence_takes_the_link_down_and_it_recovers(tmp_path: Path) -> None:
    async with setup(tmp_path, link_timeout=0.4) as (sim, link, rec):
        await sim.command("silence", seconds=1.2)
        await rec.until(lambda: not link.link_up)
        assert rec.links[-1] == (False, "no valid status frame for 0.4 s")
        await rec.until(lambda: link.link_up)


async def test_reboot_takes_link_down_then_up_with_authorization_reset(tmp_path: Path) -> None:
    async with setup(tmp_path, link_timeout=0.4) as (sim, link, rec):
        await plugged_and_connected(sim, rec)
        await link.authorize()
        await sim.command("reboot", seconds=1.2)
        await rec.until(lambda: [up for up, _ in rec.links] == [True, False, True])
        status = await rec.status_where(lambda s: s.state is ControllerState.EV_CONNECTED)
        assert not status.authorized


async def test_port_vanishing_is_reopened_and_resynced(tmp_path: Path) -> None:
    async with setup(tmp_path) as (sim, link, rec):
        await sim.command("disconnect", seconds=0.5)
        await rec.until(lambda: not link.link_up)
        assert rec.links[-1][1].startswith("serial port error")
        await rec.until(lambda: link.link_up)
        assert link.stats.reconnects >= 1
        await sim.command("plug")
        await rec.status_where(lambda s: s.pilot is PilotState.B)


async def test_a_missing_device_is_named_once_with_what_to_check(tmp_path: Path) -> None:
    rec = Recorder()
    port = tmp_path / "esp32"
    link = Esp32Link(str(port), on_status=rec.on_status, on_link=rec.on_link, poll_interval=0.1,
                     reopen_backoff=(0.05, 0.2))
    async with running(link.run()):
        await rec.until(lambda: bool(rec.links))
    assert rec.links[0] == (False, f"cannot open {port}: No such file or directory "
                                   "(ESP32 not connected, or its udev rule not installed?)")


async def test_link_started_before_the_device_exists_comes_up_when_it_appears(tmp_path: Path) -> None:
    rec = Recorder()
    sim = SimulatorProcess(tmp_path, interval=30)
    link = Esp32Link(str(sim.port), on_status=rec.on_status, on_link=rec.on_link, poll_interval=0.1,
                     reopen_backoff=(0.05, 0.2))
    async with running(link.run()):
        await rec.until(lambda: bool(rec.links))
        assert rec.links[0][0] is False and "cannot open" in rec.links[0][1]
        async with sim:
            await rec.until(lambda: link.link_up)


async def test_garbage_and_bad_frames_are_counted_and_the_link_stays_up(tmp_path: Path) -> None:
    async with setup(tmp_path) as (sim, link, rec):
        await sim.command("garbage", n=500)
        await sim.command("truncated")
        await sim.command("corrupted", field="STATE", value="9")
        await sim.command("plug")
        await rec.status_where(lambda s: s.pilot is PilotState.B)
        await rec.until(lambda: link.stats.frames_rejected >= 3)
        assert link.stats.bytes_discarded >= 500
        assert [up for up, _ in rec.links] == [True]


async def test_extra_fields_reach_the_status_and_report_firmware(tmp_path: Path) -> None:
    async with setup(tmp_path) as (sim, link, rec):
        await sim.command("extra", key="WARNING", value="temp high")
        await sim.command("extra", key="FW", value="2.3.1")
        status = await rec.status_where(lambda s: "FW" in s.extras)
        assert status.extras == {"WARNING": "temp high", "FW": "2.3.1"}
        assert link.firmware == "2.3.1"
        assert link.stats.frames_rejected == 0


async def test_a_failing_callback_is_logged_and_does_not_stop_the_link(tmp_path: Path) -> None:
    calls: list[ControllerStatus] = []

    def broken(status: ControllerStatus) -> None:
        calls.append(status)
        raise RuntimeError("core bug")

    async with SimulatorProcess(tmp_path, interval=30) as sim:
        link = Esp32Link(str(sim.port), on_status=broken, on_link=lambda up, r: None, poll_interval=0.1)
        async with running(link.run()):
            async with asyncio.timeout(WAIT):
                while not calls:
                    await asyncio.sleep(0.05)
            await sim.command("plug")
            async with asyncio.timeout(WAIT):
                while calls[-1].pilot is not PilotState.B:
                    await asyncio.sleep(0.05)
            assert link.link_up


async def test_cancelling_run_closes_the_port(tmp_path: Path) -> None:
    async with SimulatorProcess(tmp_path, interval=30) as sim:
        rec = Recorder()
        link = Esp32Link(str(sim.port), on_status=rec.on_status, on_link=rec.on_link)
        async with running(link.run()):
            await rec.until(lambda: link.link_up)
        # exclusive open succeeds only if the link really let go of the port
        port = serial.Serial(str(sim.port), 115200, exclusive=True)
        port.close()


async def test_simulator_tells_the_meter_simulator_the_charging_current(tmp_path: Path) -> None:
    loads: list[float] = []
    got = asyncio.Event()

    async def meter_control(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = json.loads(await reader.readline())
        assert request["cmd"] == "set_load"
        loads.append(request["current_a"])
        got.set()
        writer.write(b'{"ok": true}\n')
        await writer.drain()
        writer.close()

    async def until_load(value: float) -> None:
        async with asyncio.timeout(WAIT):
            while not loads or loads[-1] != value:
                got.clear()
                await got.wait()

    server = await asyncio.start_unix_server(meter_control, path=str(tmp_path / "meter.ctl"))
    try:
        rec = Recorder()
        sim = SimulatorProcess(tmp_path, interval=30, extra_args=["--meter-control", str(tmp_path / "meter.ctl")])
        async with sim:
            link = Esp32Link(str(sim.port), on_status=rec.on_status, on_link=rec.on_link, poll_interval=0.1)
            async with running(link.run()):
                await rec.until(lambda: link.link_up)
                await plugged_and_connected(sim, rec)
                await link.set_max_current(13)
                await link.authorize()
                await sim.command("ev_charge")
                await until_load(13)
                await sim.command("ev_pause")
                await until_load(0)
    finally:
        server.close()
