"""Problem flags derived from the daemon's status (api/problems.py): what a technician reads at a glance."""

from __future__ import annotations

from typing import Any

from api.problems import problems

HEALTHY: dict[str, Any] = {"ocpp": {"connected": True, "parked_messages": 0, "held_messages": 0},
                           "clock": {"trusted": True}, "connectors": []}


def flags(**changes: Any) -> dict[str, dict[str, str]]:
    status = {**HEALTHY, **changes}
    return {p["code"]: p for p in problems(status)}


def test_a_healthy_station_has_no_problems() -> None:
    assert flags() == {}


def test_parked_messages_are_a_warning_that_names_the_way_to_release_them() -> None:
    found = flags(ocpp={**HEALTHY["ocpp"], "parked_messages": 2})["outbox_parked"]
    assert found["severity"] == "warning"
    assert found["message"].startswith("2 message(s) refused by the CSMS are parked")
    assert "station outbox" in found["message"]


def test_messages_held_for_the_other_ocpp_version_are_a_warning() -> None:
    found = flags(ocpp={**HEALTHY["ocpp"], "held_messages": 3})["outbox_held"]
    assert found["severity"] == "warning" and found["message"].startswith("3 message(s) wait for")


def test_a_dead_meter_says_since_when_in_utc_time_of_day() -> None:
    found = flags(meter={"model": "adl400", "port": "/dev/meter"},
                  meter_health={"healthy": False, "reason": "3 polls in a row failed",
                                "since": "2026-11-30T01:13:17.861563+00:00"})["meter_unhealthy"]
    assert found["since"] == "01:13:17 UTC"
    assert found["message"].startswith("Energy meter not answering on the RS-485 bus: energy cannot be measured for "
                                       "billing — adl400 on /dev/meter, since 01:13:17 UTC. First check: ")


PYMODBUS_TEXT = ("Modbus Error: [Input/Output] ERROR: No response received of the last requests "
                 "(default: retries+3), CLOSING CONNECTION.")
METER = {"model": "adl400", "port": "/dev/ttyUSB1", "unit": 1, "baud": 9600}
SINCE = "2026-11-30T01:13:17+00:00"


def test_a_meter_that_does_not_answer_names_port_address_speed_and_the_wiring_to_check() -> None:
    found = flags(meter=METER, meter_health={"healthy": False, "since": SINCE,
                                             "reason": f"3 polls in a row failed: {PYMODBUS_TEXT}"})["meter_unhealthy"]
    assert found["where"] == "adl400 on /dev/ttyUSB1, Modbus address 1, 9600 baud"
    assert found["since"] == "01:13:17 UTC"
    for words in ("RS-485 wiring", "A to meter A, B to B", "Modbus address (1)", "baud rate (9600)", "display"):
        assert words in found["check"]
    assert "Modbus Error" not in found["message"] and "Input/Output" not in found["message"]


def test_a_meter_port_that_cannot_be_opened_points_at_the_usb_adapter() -> None:
    found = flags(meter=METER, meter_health={"healthy": False, "since": SINCE,
                                             "reason": "3 polls in a row failed: port unavailable"})["meter_unhealthy"]
    assert "serial port cannot be opened" in found["what"] and "USB RS-485 adapter" in found["check"]


def test_a_refused_csms_connection_is_said_in_words_with_the_url_without_credentials() -> None:
    found = flags(ocpp={"connected": False, "version": "16", "last_error_kind": "unreachable", "failed_attempts": 4,
                        "url": "ws://TECH:s3cret@csms.example:9000/ocpp/CP1?token=abc",
                        "last_error": "ConnectionRefusedError: [Errno 111] Connect call failed ('10.0.0.9', 9000)"},
                  )["csms_unreachable"]
    assert found["what"] == "the CSMS server refuses connections: nothing answers at that address and port"
    assert found["where"] == "ws://csms.example:9000/ocpp/CP1 (OCPP 1.6J), 4 attempt(s) failed"
    assert "Errno" not in found["message"] and "ConnectionRefusedError" not in found["message"]
    assert "s3cret" not in found["message"] and "abc" not in found["message"] and "TECH" not in found["message"]


def test_refused_credentials_point_at_the_station_id_and_password() -> None:
    found = flags(ocpp={"connected": False, "last_error_kind": "auth_failed", "last_error": "HTTP 401",
                        "url": "wss://csms.example/ocpp/CP1"})["csms_unreachable"]
    assert "credentials" in found["what"] and "OCPP_STATION_NAME" in found["check"]


def faulted(**report: Any) -> dict[str, str]:
    conn = {"id": 1, "status": "Faulted", "controller_link": {"up": True}, "status_since": SINCE,
            "error_code": "InternalError", "pilot": "B", "controller_state": "IDLE", **report}
    return flags(connectors=[conn])["connector_faulted"]


def test_an_esp32_hard_fault_says_what_it_means_and_what_to_do() -> None:
    found = faulted(controller_state="FAULT_HARD", pilot="E", info="controller state FAULT_HARD")
    assert found["what"].startswith("connector 1: the charge controller reports a hard fault and opened the relay")
    assert "residual current device" in found["check"] and found["since"] == "01:13:17 UTC"
    assert "FAULT_HARD" not in found["message"] and "InternalError" not in found["message"]


def test_a_fault_that_ended_the_session_asks_for_the_cable_to_be_unplugged() -> None:
    assert faulted(controller_state="HARDFAULT_END")["check"].startswith("unplug the cable")


def test_a_pilot_error_points_at_the_cable_and_a_power_board_fault_at_the_supply() -> None:
    assert "cable" in faulted(pilot="E", error_code="OtherError")["check"]
    assert "contactor" in faulted(error_code="PowerSwitchFailure")["check"]


def test_an_esp32_that_sends_nothing_names_its_port_and_the_power_and_baud_rate_to_check() -> None:
    found = flags(esp32={"1": {"port": "/dev/esp32"}},
                  connectors=[{"id": 1, "status": "Faulted", "controller_link": {
                      "up": False, "reason": "no valid status frame for 3 s", "since": SINCE}}])["esp32_link_down"]
    assert found["where"] == "/dev/esp32" and found["since"] == "01:13:17 UTC"
    assert "powered" in found["check"] and "STATION_ESP32_BAUD" in found["check"]


def test_problems_without_a_time_of_their_own_are_dated_when_first_seen_and_keep_that_date() -> None:
    from datetime import UTC, datetime

    memory: dict[str, str] = {}
    down = {**HEALTHY, "ocpp": {"connected": False}}
    first = problems(down, memory, now=datetime(2026, 11, 30, 9, 0, tzinfo=UTC))
    later = problems(down, memory, now=datetime(2026, 11, 30, 9, 5, tzinfo=UTC))
    assert first[0]["since"] == later[0]["since"] == "09:00:00 UTC"
    problems(HEALTHY, memory)
    assert memory == {}


def test_every_problem_says_what_since_when_and_the_first_check() -> None:
    everything_wrong = {
        "ocpp": {"connected": False, "parked_messages": 1, "held_messages": 1, "url": "ws://x/"},
        "clock": {"trusted": False}, "store": {"healthy": False},
        "meter": METER, "meter_health": {"healthy": False, "since": SINCE, "reason": "x"},
        "esp32": {"1": {"port": "/dev/esp32", "warnings": ["PWM=267"]}},
        "connectors": [{"id": 1, "status": "Faulted", "controller_link": {"up": False, "reason": "x"}},
                       {"id": 2, "status": "Faulted", "controller_link": {"up": True}, "controller_state": "FAULT_HARD",
                        "meter": {"voltage_v": [190.0]}}],
    }
    found = problems(everything_wrong)
    assert len(found) == 10
    for p in found:
        assert p["what"] and p["since"] and p["check"], p
        assert p["message"].endswith(f"First check: {p['check']}.")
