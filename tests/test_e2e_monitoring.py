"""Monitoring end to end: the real daemon, the ESP32 and meter simulators as processes, the dev CSMS."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from station.controller.simulator import SimulatorProcess
from station.devtools.csms import DevCsms, Received
from tests.e2e import STATION_ID, DaemonProcess, metered_station, station_env

POWER = {"component": {"name": "EVSE", "evse": {"id": 1}}, "variable": {"name": "Power"}}


def event_of(received: Received) -> dict[str, Any]:
    [data] = received.payload["eventData"]
    return data


async def test_a_threshold_monitor_trips_on_the_meter_simulators_power(tmp_path: Path) -> None:
    async with metered_station(tmp_path, energy_wh=10_000, speedup=1.0, esp_interval=1,
                               meter_follows_esp32=False) as (csms, meter, _, _):
        answer = await csms.call(STATION_ID, "SetVariableMonitoring", {"setMonitoringData": [
            {**POWER, "type": "UpperThreshold", "value": 5000, "severity": 4}]})
        [result] = answer["setMonitoringResult"]
        assert result["status"] == "Accepted"
        mark = csms.mark()
        await meter.command("set_load", current_a=10)  # about 6.9 kW on three phases

        def power_event(r: Received) -> bool:
            return event_of(r).get("variableMonitoringId") == result["id"]

        tripped = event_of(await csms.wait_for("NotifyEvent", STATION_ID, power_event, timeout=20, since=mark))
        assert tripped["trigger"] == "Alerting" and "cleared" not in tripped
        assert 6000 < float(tripped["actualValue"]) < 8000
        mark = csms.mark()
        await meter.command("set_load", current_a=0)
        cleared = event_of(await csms.wait_for("NotifyEvent", STATION_ID, power_event, timeout=20, since=mark))
        assert cleared["cleared"] is True


async def test_a_disconnected_esp32_is_reported_with_notify_event_and_cleared_when_it_is_back(tmp_path: Path) -> None:
    async with DevCsms(heartbeat_interval=30) as csms, SimulatorProcess(tmp_path, interval=1) as esp:
        env = station_env(tmp_path, csms, esp.port, STATION_ESP32_LINK_TIMEOUT_SECONDS="2")
        daemon = await DaemonProcess(env, tmp_path / "station.log").start()
        try:
            await csms.wait_for("StatusNotification", STATION_ID, lambda r: r.payload["connectorStatus"] == "Available",
                                timeout=20)
            mark = csms.mark()
            await esp.command("disconnect", seconds=6)

            def link_event(r: Received) -> bool:
                return event_of(r)["component"] == {"name": "CPPWMController", "evse": {"id": 1}}

            lost_call = await csms.wait_for("NotifyEvent", STATION_ID, link_event, timeout=20, since=mark)
            lost = event_of(lost_call)
            assert (lost["variable"], lost["actualValue"], lost["eventNotificationType"]) == (
                {"name": "Problem"}, "true", "HardWiredNotification")
            assert lost["techCode"] == "LinkLost" and "cleared" not in lost
            back = event_of(await csms.wait_for("NotifyEvent", STATION_ID, link_event, timeout=30,
                                                since=csms.received.index(lost_call) + 1))
            assert (back["actualValue"], back["cleared"]) == ("false", True)
        finally:
            await daemon.stop()
