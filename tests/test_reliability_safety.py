"""The relay safety invariant over the real core, as a hypothesis state machine.

The charge controller here is a worst case: it obeys every command and never opens
the relay on its own (not on a fault, not on unplug), so any decision the core gets
wrong shows up as an authorized controller. After every step (once the core's
actuator has settled) and with the link up:

  controller authorized  ⇒  an authorized transaction exists, the connector is
                            neither faulted nor unavailable, a vehicle is present
                            and the current limit allows charging (≥ 6 A);

and the core never sends a command over a link it knows is down. Conversely, when
all of that holds and the vehicle asks for charge, the controller is authorized
(the session is not left stuck). A failed command is retried by the next tick.
A failing run shrinks to a short list of readable steps (plug, fault, tick ...).
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from station.core.model import ControllerState, ControllerStatus, PilotState
from station.core.ports import ControllerError
from station.core.station import StationCore
from station.core.store import Store
from tests.reliability import record


class WorstCaseController:
    """Obeys every command, opens the relay only when told to or when the EV stops asking."""

    firmware = "worst-case"

    def __init__(self) -> None:
        self.core: StationCore | None = None
        self.link_up = True
        self.plugged = False
        self.ev_requests = False
        self.authorized = False
        self.stopped = False
        self.fault: str | None = None  # "pilot" | "power_board"
        self.fault_ended = False
        self.max_current_a = 16
        self.fail_next = 0
        self.violations: list[str] = []
        self.commands: list[str] = []

    def status(self) -> ControllerStatus:
        if self.fault == "pilot":
            pilot = PilotState.E
        elif not self.plugged:
            pilot = PilotState.A
        else:
            pilot = PilotState.C if self.ev_requests else PilotState.B
        relay = self.authorized and self.plugged and self.ev_requests
        if self.fault:
            state = ControllerState.FAULT_HARD
        elif self.fault_ended:
            state = ControllerState.HARDFAULT_END
        elif not self.plugged:
            state = ControllerState.IDLE
        elif relay:
            state = ControllerState.CHARGING
        elif self.stopped:
            state = ControllerState.STOPPED
        elif self.authorized:
            state = ControllerState.READY
        else:
            state = ControllerState.EV_CONNECTED
        return ControllerStatus(pilot, state, relay, self.authorized, self.max_current_a, 32,
                                power_board_fault=self.fault == "power_board")

    def emit(self) -> None:
        if self.link_up and self.core is not None:
            self.core.on_controller_status(1, self.status())

    def _command(self, name: str) -> None:
        self.commands.append(name)
        if not self.link_up:
            self.violations.append(f"{name} sent while the link was down")
            raise ControllerError("link down")
        if self.fail_next:
            self.fail_next -= 1
            raise ControllerError(f"{name} not confirmed (injected)")

    async def authorize(self) -> None:
        self._command("authorize")
        self.authorized = True
        self.emit()

    async def stop_charging(self) -> None:
        self._command("stop")
        self.authorized = False
        self.stopped = self.plugged
        self.emit()

    async def set_max_current(self, amps: int) -> None:
        self._command(f"current {amps}")
        self.max_current_a = amps
        self.emit()

    async def request_status(self) -> ControllerStatus | None:
        return self.status() if self.link_up else None


class SafetyMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = Path(tempfile.mkdtemp(prefix="safety-"))
        self.esp = WorstCaseController()
        self.core = StationCore(store=Store(self.dir / "state.db"))
        self.esp.core = self.core
        self.core.attach_controller(1, self.esp)
        self.operative = True
        self.inoperative_scheduled = False
        self.limit = 32.0
        self.unretried_failure = False
        self.steps = 0
        self._run(self.esp.emit)

    # ------------------------------------------------------------------ plumbing
    def _run(self, action: object) -> None:
        async def go() -> None:
            action()  # type: ignore[operator]
            for _ in range(500):
                actuator = self.core.connectors[1].actuator
                if actuator is None or actuator.done():
                    break
                await asyncio.sleep(0)
            else:
                raise AssertionError("actuator did not settle")

        self.loop.run_until_complete(go())
        self.steps += 1
        if self.core.connectors[1].transaction is None and self.inoperative_scheduled:
            self.inoperative_scheduled = False

    def teardown(self) -> None:
        self.loop.run_until_complete(self.core.close())
        self.core.store.close()
        self.loop.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        record("safety (core)", trials=1, faults=len(self.esp.commands), events_checked=self.steps)

    @property
    def tx(self) -> object:
        return self.core.connectors[1].transaction

    def relay_may_close(self) -> bool:
        """The rule, from the test's own view of the world."""
        esp = self.esp
        return (esp.link_up and self.tx is not None and esp.fault is None and not esp.fault_ended and esp.plugged
                and (self.operative or self.inoperative_scheduled) and self.limit >= 6)

    # ------------------------------------------------------------------ the vehicle
    @rule()
    def plug(self) -> None:
        if not self.esp.plugged:
            self.esp.plugged, self.esp.ev_requests, self.esp.stopped = True, False, False
        self._run(self.esp.emit)

    @rule()
    def unplug(self) -> None:
        esp = self.esp
        esp.plugged = esp.ev_requests = esp.stopped = esp.fault_ended = False
        self._run(esp.emit)
        if esp.link_up and esp.fault != "pilot":  # with CP=E the station cannot see the vehicle leave
            assert self.tx is None, "transaction survived the unplug"

    @rule()
    def ev_asks_for_charge(self) -> None:
        if self.esp.plugged:
            self.esp.ev_requests = True
        self._run(self.esp.emit)

    @rule()
    def ev_pauses(self) -> None:
        self.esp.ev_requests = False
        self._run(self.esp.emit)

    # ------------------------------------------------------------------ the controller
    @rule(kind=st.sampled_from(["pilot", "power_board"]))
    def controller_fault(self, kind: str) -> None:
        self.esp.fault = kind
        self._run(self.esp.emit)

    @rule()
    def fault_clears(self) -> None:
        if self.esp.fault is not None:
            self.esp.fault = None
            self.esp.fault_ended = self.esp.plugged
        self._run(self.esp.emit)

    @precondition(lambda self: self.esp.link_up)
    @rule()
    def link_lost(self) -> None:
        self.esp.link_up = False
        self._run(lambda: self.core.on_controller_link(1, False, "test: link lost"))

    @precondition(lambda self: not self.esp.link_up)
    @rule(rebooted=st.booleans())
    def link_returns(self, rebooted: bool) -> None:
        if rebooted:  # a reset ESP32 forgets authorization, stop and limit
            self.esp.authorized = self.esp.stopped = self.esp.fault_ended = False
            self.esp.fault, self.esp.max_current_a = None, 16
        self.esp.link_up = True

        def back() -> None:
            self.core.on_controller_link(1, True, "test: link back")
            self.esp.emit()

        self._run(back)

    @rule(n=st.integers(1, 3))
    def next_commands_fail(self, n: int) -> None:
        self.esp.fail_next = n
        self.unretried_failure = True

    @rule()
    def tick(self) -> None:
        self._run(self.core.tick)
        if self.esp.fail_next == 0:
            self._run(self.core.tick)  # a failure during the first retry is retried by the next one
            if self.esp.fail_next == 0:
                self.unretried_failure = False

    # ------------------------------------------------------------------ the CSMS / operator
    @rule(token=st.sampled_from(["TAG-1", "TAG-2"]))
    def remote_start(self, token: str) -> None:
        self._run(lambda: self.core.request_start(1, token))

    @rule()
    def remote_stop(self) -> None:
        self._run(lambda: self.core.request_stop(connector_id=1))
        if self.esp.link_up or self.tx is not None:
            assert self.core.connectors[1].pending is None

    @rule()
    def csms_deauthorizes_the_token(self) -> None:
        tx = self.tx
        if tx is not None:
            self._run(lambda: self.core.request_stop(tx.id, reason="DeAuthorized", trigger="Deauthorized"))  # type: ignore[attr-defined]
            assert self.tx is None

    @rule(operative=st.booleans())
    def change_availability(self, operative: bool) -> None:
        result: list[str] = []
        self._run(lambda: result.append(self.core.set_availability(1, operative)))
        self.operative = operative
        self.inoperative_scheduled = result[0] == "Scheduled"

    @rule(amps=st.sampled_from([None, 0, 5, 6, 10, 16, 32]))
    def csms_limit(self, amps: float | None) -> None:
        self._run(lambda: self.core.set_limit(1, amps, "csms"))
        self.limit = 32.0 if amps is None else float(amps)

    # ------------------------------------------------------------------ invariants
    @invariant()
    def relay_closed_only_when_allowed(self) -> None:
        assert not self.esp.violations, self.esp.violations
        if self.unretried_failure or not self.esp.link_up:
            return
        if self.esp.authorized:
            assert self.relay_may_close(), f"controller authorized but the rule forbids it: {self.describe()}"

    @invariant()
    def charging_resumes_when_everything_allows_it(self) -> None:
        if self.unretried_failure or not self.esp.link_up:
            return
        if self.relay_may_close() and self.esp.ev_requests:
            assert self.esp.authorized, f"charging allowed and asked for, but not authorized: {self.describe()}"

    def describe(self) -> str:
        conn = self.core.connectors[1]
        return (f"controller={dataclasses.asdict(self.esp.status())} tx={self.tx is not None} "
                f"status={conn.derived.status.value} operative={self.operative} "
                f"scheduled={self.inoperative_scheduled} limit={self.limit} commands={self.esp.commands[-6:]}")


TestSafetyInvariantOverTheCore = SafetyMachine.TestCase
TestSafetyInvariantOverTheCore.settings = settings(
    max_examples=120, stateful_step_count=30, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@pytest.mark.slow
def test_soak_safety_invariant_over_the_core() -> None:
    from hypothesis.stateful import run_state_machine_as_test

    run_state_machine_as_test(SafetyMachine, settings=settings(
        max_examples=3000, stateful_step_count=60, deadline=None, database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))


async def test_a_stop_the_controller_did_not_confirm_is_retried_by_the_next_tick(tmp_path: Path) -> None:
    esp = WorstCaseController()
    core = StationCore(store=Store(tmp_path / "state.db"))
    esp.core = core
    core.attach_controller(1, esp)
    esp.plugged, esp.ev_requests = True, True
    esp.emit()
    core.request_start(1, "TAG-1")
    await asyncio.sleep(0.01)
    assert esp.authorized and esp.status().relay_closed
    esp.fail_next = 1
    core.request_stop(connector_id=1)
    await asyncio.sleep(0.01)
    assert esp.authorized, "the injected failure should have kept the relay closed"
    core.tick()
    await asyncio.sleep(0.01)
    assert not esp.authorized and not esp.status().relay_closed
    await core.close()
    core.store.close()
