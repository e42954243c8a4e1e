"""The status mapping table and the relay safety rule."""

from hypothesis import given
from hypothesis import strategies as st

from station.core.connector import derive_status, relay_may_close
from station.core.model import ConnectorStatus, ControllerState, PilotState
from tests.core_helpers import report


def test_link_down_is_faulted_whatever_the_last_report() -> None:
    d = derive_status(report("C", ControllerState.CHARGING, relay=True), link_up=False, operative=True,
                      in_transaction=True)
    assert d.status == ConnectorStatus.FAULTED and d.info == "charge controller link down"


def test_no_vehicle_is_available() -> None:
    assert derive_status(report("A"), link_up=True, operative=True, in_transaction=False).status == \
        ConnectorStatus.AVAILABLE


def test_no_vehicle_and_inoperative_is_unavailable() -> None:
    assert derive_status(report("A"), link_up=True, operative=False, in_transaction=False).status == \
        ConnectorStatus.UNAVAILABLE


def test_vehicle_without_transaction_is_preparing() -> None:
    d = derive_status(report("B", ControllerState.EV_CONNECTED), link_up=True, operative=True, in_transaction=False)
    assert d.status == ConnectorStatus.PREPARING


def test_relay_closed_while_charging_is_charging() -> None:
    d = derive_status(report("C", ControllerState.CHARGING, relay=True, auth=True), link_up=True, operative=True,
                      in_transaction=True)
    assert (d.status, d.charging_state) == (ConnectorStatus.CHARGING, "Charging")


def test_transaction_with_vehicle_not_asking_is_suspended_ev() -> None:
    d = derive_status(report("B", ControllerState.READY, auth=True), link_up=True, operative=True,
                      in_transaction=True)
    assert d.status == ConnectorStatus.SUSPENDED_EV


def test_stopped_after_transaction_is_finishing() -> None:
    d = derive_status(report("B", ControllerState.STOPPED), link_up=True, operative=True, in_transaction=False)
    assert d.status == ConnectorStatus.FINISHING


def test_pilot_error_states_are_faulted() -> None:
    for pilot in ("E", "F"):
        assert derive_status(report(pilot), link_up=True, operative=True, in_transaction=False).status == \
            ConnectorStatus.FAULTED


@given(
    pilot=st.sampled_from(list(PilotState)),
    state=st.sampled_from(list(ControllerState)),
    link_up=st.booleans(),
    operative=st.booleans(),
    tx=st.booleans(),
    pb_fault=st.booleans(),
    limit=st.floats(min_value=0, max_value=40),
)
def test_relay_may_close_only_when_every_safety_condition_holds(
    pilot: PilotState, state: ControllerState, link_up: bool, operative: bool, tx: bool, pb_fault: bool,
    limit: float,
) -> None:
    r = report(pilot.value, state, power_board_fault=pb_fault)
    allowed = relay_may_close(r, link_up=link_up, operative=operative, authorized_transaction=tx, limit_a=limit)
    if allowed:
        assert link_up and operative and tx and limit >= 6 and not pb_fault
        assert pilot in (PilotState.B, PilotState.C, PilotState.D)
        assert state not in (ControllerState.FAULT_HARD, ControllerState.HARDFAULT_END)
        assert derive_status(r, link_up=link_up, operative=operative, in_transaction=tx).status not in (
            ConnectorStatus.FAULTED, ConnectorStatus.UNAVAILABLE)
