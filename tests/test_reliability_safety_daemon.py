"""The relay safety invariant over the running daemon, with the ESP32 simulator as ground truth.

A hypothesis state machine drives the real `station run` process through the
simulator (plug, unplug, EV charge/pause, pilot and power-board faults, the port
vanishing, reboots) and through the local IPC (start, stop, availability, limits).
After each step has settled, the simulator's own view decides: the relay may be
closed or the controller authorized only while the daemon holds a transaction, the
simulator reports no fault, a vehicle is plugged, the connector is operative and
the limit is at least 6 A. When everything allows it and the EV asks, charging
resumes. One daemon serves every example (state reset between them), so the
bounded run stays short; the soak runs many more.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from station.controller.simulator import SimulatorProcess
from station.devtools.csms import DevCsms
from station.ipc.client import IpcClient
from tests.e2e import DaemonProcess, station_env
from tests.reliability import record


class DaemonRig:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.loop = asyncio.new_event_loop()
        self.stack = contextlib.AsyncExitStack()
        self.sim: SimulatorProcess | None = None
        self.ipc: IpcClient | None = None
        self.daemon: DaemonProcess | None = None
        self.steps = 0

    def run(self, coro: Any, timeout: float = 30) -> Any:
        return self.loop.run_until_complete(asyncio.wait_for(coro, timeout))

    async def start(self) -> None:
        csms = await self.stack.enter_async_context(DevCsms(heartbeat_interval=30))
        self.sim = await self.stack.enter_async_context(SimulatorProcess(self.dir, interval=1))
        env = station_env(self.dir, csms, self.sim.port)
        self.daemon = await DaemonProcess(env, self.dir / "station.log").start()
        await self.daemon.wait_ipc()
        self.ipc = IpcClient(env["STATION_IPC_SOCKET"], timeout=5)

    async def stop(self) -> None:
        if self.ipc is not None:
            await self.ipc.close()
        if self.daemon is not None:
            assert await self.daemon.stop() == 0
        await self.stack.aclose()

    async def views(self) -> tuple[dict[str, Any], dict[str, Any]]:
        assert self.sim is not None and self.ipc is not None
        sim = await self.sim.command("state")
        conn = (await self.ipc.status())["connectors"][0]
        return sim, conn

    async def settle(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Until the daemon has seen the simulator's present state (and acted on it), at most 5 s."""
        await asyncio.sleep(0.3)
        sim, conn = await self.views()
        for _ in range(50):
            reachable = sim["port_present"] and not sim["silent"]
            seen = conn["controller_link"]["up"] == reachable and (
                not reachable or (conn["pilot"] == sim["pilot"] and conn["controller_authorized"] == bool(sim["AUTH"])
                                  and conn["relay_closed"] == bool(sim["RL"])))
            if seen:
                await asyncio.sleep(0.3)  # one more poll: commands the new state calls for have gone out
                again = await self.views()
                if again[0]["AUTH"] == sim["AUTH"] and again[0]["RL"] == sim["RL"]:
                    return again
            await asyncio.sleep(0.1)
            sim, conn = await self.views()
        return sim, conn

    async def reset(self) -> None:
        assert self.sim is not None and self.ipc is not None
        await self.sim.command("unplug")
        await self.sim.command("clear_fault")
        await self.sim.command("unplug")  # HARDFAULT_END clears with the cable
        with contextlib.suppress(Exception):
            await self.ipc.stop(connector_id=1)
        await self.ipc.availability(1, True)
        await self.ipc.limit(1, None)
        async with asyncio.timeout(15):
            while True:
                sim, conn = await self.views()
                if conn["status"] == "Available" and not sim["AUTH"] and conn["transaction"] is None \
                        and not conn["pending_authorization"] and sim["port_present"] and not sim["silent"]:
                    return
                await asyncio.sleep(0.1)


RIG: DaemonRig | None = None


class DaemonSafety(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        assert RIG is not None
        self.rig = RIG
        self.rig.run(self.rig.reset())
        self.limit: float | None = None
        self.operative = True

    def step(self, coro: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the simulator refusing (e.g. ev_charge unplugged) is a no-op
            self.rig.run(coro)
        self.rig.steps += 1

    @rule(action=st.sampled_from(["plug", "unplug", "ev_charge", "ev_pause", "clear_fault"]))
    def vehicle(self, action: str) -> None:
        assert self.rig.sim is not None
        self.step(self.rig.sim.command(action))

    @rule(kind=st.sampled_from(["pilot", "power_board"]))
    def fault(self, kind: str) -> None:
        assert self.rig.sim is not None
        self.step(self.rig.sim.command("fault", kind=kind))

    @rule(what=st.sampled_from(["disconnect", "reboot"]))
    def link_fault(self, what: str) -> None:
        assert self.rig.sim is not None
        self.step(self.rig.sim.command(what, seconds=0.5 if what == "disconnect" else 3.5))

    @rule()
    def start(self) -> None:
        assert self.rig.ipc is not None
        self.step(self._quiet(self.rig.ipc.start(1, "TAG-1")))

    @rule()
    def stop(self) -> None:
        assert self.rig.ipc is not None
        self.step(self._quiet(self.rig.ipc.stop(connector_id=1)))

    @rule(operative=st.booleans())
    def availability(self, operative: bool) -> None:
        assert self.rig.ipc is not None
        self.step(self.rig.ipc.availability(1, operative))

    @rule(amps=st.sampled_from([None, 0, 5, 6, 10, 16]))
    def limit(self, amps: float | None) -> None:
        assert self.rig.ipc is not None
        self.step(self._quiet(self.rig.ipc.limit(1, amps)))

    @staticmethod
    async def _quiet(coro: Any) -> None:
        with contextlib.suppress(Exception):  # refused start/stop is part of the game
            await coro

    @invariant()
    def relay_closed_only_when_allowed(self) -> None:
        sim, conn = self.rig.run(self.rig.settle())
        if not sim["port_present"] or sim["silent"]:
            return  # nothing can be commanded over a dead line; checked again once it is back
        if sim["AUTH"] or sim["RL"]:
            problems = []
            if conn["transaction"] is None:
                problems.append("no transaction")
            if sim["STATE"] in (0, 8) or sim["PB"] or sim["pilot"] in ("E", "F"):
                problems.append("controller faulted")
            if not sim["plugged"]:
                problems.append("no vehicle")
            if not (conn["operative"] or conn["inoperative_scheduled"]):
                problems.append("connector unavailable")
            if conn["limit_a"] < 6:
                problems.append(f"limit {conn['limit_a']} A")
            assert not problems, f"relay may close ({sim['state_name']}, AUTH={sim['AUTH']}) but: {problems}; {conn}"

    @invariant()
    def charging_resumes_when_everything_allows_it(self) -> None:
        sim, conn = self.rig.run(self.rig.views())
        allowed = (sim["port_present"] and not sim["silent"] and conn["transaction"] is not None and sim["plugged"]
                   and sim["ev_requests"] and sim["STATE"] not in (0, 8) and not sim["PB"] and not sim["STOP"]
                   and (conn["operative"] or conn["inoperative_scheduled"]) and conn["limit_a"] >= 6)
        if allowed:
            async def wait_relay() -> None:
                assert self.rig.sim is not None
                await self.rig.sim.wait_for(lambda s: s["RL"] == 1, timeout=5)

            self.rig.run(wait_relay())


def run(tmp_path: Path, examples: int, steps: int) -> None:
    global RIG
    RIG = DaemonRig(tmp_path)
    RIG.run(RIG.start(), timeout=60)
    try:
        run_state_machine_as_test(DaemonSafety, settings=settings(
            max_examples=examples, stateful_step_count=steps, deadline=None, database=None,
            suppress_health_check=list(HealthCheck)))
    finally:
        record("safety (daemon)", trials=examples, faults=RIG.steps, events_checked=RIG.steps)
        RIG.run(RIG.stop(), timeout=60)
        RIG.loop.close()
        RIG = None


def test_relay_safety_invariant_holds_over_the_running_daemon(tmp_path: Path) -> None:
    run(tmp_path, examples=3, steps=6)


@pytest.mark.slow
def test_soak_relay_safety_invariant_over_the_running_daemon(tmp_path: Path) -> None:
    run(tmp_path, examples=60, steps=15)
