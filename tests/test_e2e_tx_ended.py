"""The end message carries the readings taken during the transaction (2.0.1 SampledDataCtrlr /
AlignedDataCtrlr TxEndedInterval; 1.6 StopTxnSampledData / StopTxnAlignedData), also across a
kill -9: the real daemon, the ESP32 and meter simulators and the dev CSMS (which validates strictly).
"""

from __future__ import annotations

import asyncio
import signal
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from station.controller.simulator import SimulatorProcess
from station.devtools.csms import DevCsms
from station.meter.sim_process import MeterSimProcess
from tests.e2e import STATION_ID, DaemonProcess, station_env
from tests.test_e2e_version_switch import BOTH, ONLY_16, station

ENERGY = "Energy.Active.Import.Register"
SETTINGS_201 = (("SampledDataCtrlr", "TxEndedInterval", "1"), ("SampledDataCtrlr", "TxEndedMeasurands", ENERGY),
                ("AlignedDataCtrlr", "TxEndedInterval", "2"), ("AlignedDataCtrlr", "TxEndedMeasurands", ENERGY))
SETTINGS_16 = (("MeterValueSampleInterval", "1"), ("StopTxnSampledData", ENERGY),
               ("ClockAlignedDataInterval", "2"), ("StopTxnAlignedData", ENERGY))


def stamp(value: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(value["timestamp"].replace("Z", "+00:00"))


async def configure(csms: DevCsms, version: str) -> None:
    if version == "201":
        answer = await csms.call(STATION_ID, "SetVariables", {"setVariableData": [
            {"component": {"name": c}, "variable": {"name": v}, "attributeValue": value} for c, v, value in SETTINGS_201]})
        assert {r["attributeStatus"] for r in answer["setVariableResult"]} == {"Accepted"}, answer
        return
    for key, value in SETTINGS_16:
        assert (await csms.call(STATION_ID, "ChangeConfiguration", {"key": key, "value": value}))["status"] == "Accepted"


@pytest.mark.parametrize("version", ["201", "16"])
async def test_the_end_message_carries_sampled_and_clock_aligned_readings_kept_across_a_kill_9(
    tmp_path: Path, version: str
) -> None:
    async with (
        DevCsms(heartbeat_interval=30) as csms,
        MeterSimProcess(tmp_path, speedup=200, energy_wh=300_000) as meter,
        SimulatorProcess(tmp_path, interval=1, extra_args=["--meter-control", str(meter.control)]) as esp,
    ):
        env = station_env(tmp_path, csms, esp.port, OCPP_PRIMARY=version, STATION_METER_PORT=str(meter.link),
                          STATION_METER_POLL_SECONDS="0.2", STATION_METER_VALUE_SECONDS="3600")
        daemon = await DaemonProcess(env, tmp_path / "station.log").start()
        try:
            await csms.wait_for("StatusNotification", STATION_ID, timeout=20)
            await configure(csms, version)
            if version == "201":
                await csms.call(STATION_ID, "RequestStartTransaction",
                                {"idToken": {"idToken": "END-1", "type": "ISO14443"}, "remoteStartId": 5})
            else:
                await csms.call(STATION_ID, "RemoteStartTransaction", {"connectorId": 1, "idTag": "END-1"})
            await esp.command("plug")
            await esp.command("ev_charge")
            await csms.wait_for("TransactionEvent" if version == "201" else "StartTransaction", STATION_ID, timeout=10)
            await asyncio.sleep(4.5)
            killed_at = datetime.now().astimezone()
            await daemon.stop(signal.SIGKILL)
            mark = csms.mark()
            daemon = await DaemonProcess(env, tmp_path / "station.log").start()
            await csms.wait_for("StatusNotification", STATION_ID, since=mark, timeout=20)
            restarted_at = datetime.now().astimezone()
            await asyncio.sleep(4.5)
            await esp.command("unplug")
            if version == "201":
                end = await csms.wait_for("TransactionEvent", STATION_ID, lambda r: r.payload["eventType"] == "Ended",
                                          timeout=15)
                values = end.payload["meterValue"]
            else:
                end = await csms.wait_for("StopTransaction", STATION_ID, timeout=15)
                values = end.payload["transactionData"]
        finally:
            await daemon.stop()

    contexts = [v["sampledValue"][0]["context"] for v in values]
    assert contexts[0] == "Transaction.Begin" and contexts[-1] == "Transaction.End", contexts
    periodic = [v for v in values if v["sampledValue"][0]["context"] == "Sample.Periodic"]
    clock = [v for v in values if v["sampledValue"][0]["context"] == "Sample.Clock"]
    assert any(stamp(v) < killed_at for v in periodic), "readings before the kill -9 were lost"
    assert any(stamp(v) > restarted_at for v in periodic), "no readings after the restart"
    assert len(clock) >= 2 and all(stamp(v).microsecond == 0 and stamp(v).second % 2 == 0 for v in clock)
    assert all([s["measurand"] for s in v["sampledValue"]] == [ENERGY] for v in periodic + clock)
    assert [stamp(v) for v in values] == sorted(stamp(v) for v in values)
    energies = [float(v["sampledValue"][0]["value"]) for v in values]
    assert energies == sorted(energies) and energies[-1] > energies[0]  # the EV charged meanwhile


async def test_1_6_a_transaction_started_at_plug_in_under_2_0_1_settings_goes_out_with_the_free_vend_id_tag(
    tmp_path: Path,
) -> None:
    async with station(tmp_path, BOTH) as (csms, esp, rig):
        await csms.wait_for("StatusNotification", STATION_ID, timeout=20)
        answer = await csms.call(STATION_ID, "SetVariables", {"setVariableData": [{
            "component": {"name": "TxCtrlr"}, "variable": {"name": "TxStartPoint"}, "attributeValue": "EVConnected"}]})
        assert answer["setVariableResult"][0]["attributeStatus"] == "Accepted"
        await rig.switch_to(ONLY_16, "16")  # the next transaction's first message goes out in 1.6
        await rig.until(lambda s: s["ocpp"]["version"] == "16")
        site = await csms.call(STATION_ID, "ChangeConfiguration", {"key": "FreeVendIdTag", "value": "SITE-FREE"})
        assert site == {"status": "Accepted"}
        await esp.command("plug")  # TxStartPoint EVConnected: the transaction starts with no token
        start = await csms.wait_for("StartTransaction", STATION_ID, timeout=20)
        await csms.call(STATION_ID, "RemoteStartTransaction", {"connectorId": 1, "idTag": "DRIVER-1"})
        await esp.command("ev_charge")
        await rig.until(lambda s: ((s["connectors"][0]["meter"] or {}).get("power_w") or 0) > 0)
        await esp.command("unplug")
        stop = await csms.wait_for("StopTransaction", STATION_ID, timeout=20)
        final = await rig.until(lambda s: s["outbox_depth"] == 0)

    assert start.payload["idTag"] == "SITE-FREE"
    assert stop.payload["transactionId"] == csms.last_transaction_id
    assert stop.payload["idTag"] == "DRIVER-1"  # the driver's token authorized the running transaction
    assert final["ocpp"]["parked_messages"] == 0
