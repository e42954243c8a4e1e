"""Measurands chosen by the CSMS (SampledDataCtrlr / AlignedDataCtrlr, 1.6 *SampledData / *AlignedData):
only what the meter measures is accepted, and the transaction's messages carry what was chosen."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from station.core.model import MeterReading
from tests.ocpp_helpers import Rig, rig_on_dev_csms

METER_WITHOUT_FREQUENCY = frozenset({"Energy.Active.Import.Register", "Power.Active.Import", "Current.Import", "Voltage"})
READING = MeterReading(5000.0, power_w=7000.0, current_a=(10.0, 10.0, 10.0), voltage_v=(230.0, 230.0, 230.0),
                       frequency_hz=50.0)


async def set_201(rig: Rig, component: str, variable: str, value: str) -> dict[str, Any]:
    answer = await rig.csms.call("CP", "SetVariables", {"setVariableData": [
        {"component": {"name": component}, "variable": {"name": variable}, "attributeValue": value}]})
    return dict(answer["setVariableResult"][0])


async def test_2_0_1_a_measurand_the_meter_lacks_is_rejected_and_the_setting_kept(tmp_path: Path) -> None:
    async with rig_on_dev_csms("201", tmp_path / "station.db") as rig:
        assert rig.core is not None
        rig.core.measurands = METER_WITHOUT_FREQUENCY
        refused = await set_201(rig, "SampledDataCtrlr", "TxUpdatedMeasurands", "Energy.Active.Import.Register,Frequency")
        accepted = await set_201(rig, "SampledDataCtrlr", "TxUpdatedMeasurands", "Voltage,Energy.Active.Import.Register")
        unknown = await set_201(rig, "AlignedDataCtrlr", "Measurands", "SoC")
        value = rig.core.device_model.value("SampledDataCtrlr", "TxUpdatedMeasurands")
    assert refused["attributeStatus"] == "Rejected" and "Frequency" in refused["attributeStatusInfo"]["additionalInfo"]
    assert accepted["attributeStatus"] == "Accepted"
    assert unknown["attributeStatus"] == "Rejected"
    assert value == "Voltage,Energy.Active.Import.Register"


async def test_1_6_change_configuration_of_a_measurand_the_meter_lacks_is_rejected(tmp_path: Path) -> None:
    async with rig_on_dev_csms("16", tmp_path / "station.db") as rig:
        assert rig.core is not None
        rig.core.measurands = METER_WITHOUT_FREQUENCY
        refused = await rig.csms.call("CP", "ChangeConfiguration", {"key": "MeterValuesSampledData", "value": "Frequency"})
        accepted = await rig.csms.call("CP", "ChangeConfiguration", {"key": "StopTxnSampledData", "value": "Voltage"})
        aligned = await rig.csms.call("CP", "ChangeConfiguration",
                                      {"key": "MeterValuesAlignedData", "value": "Energy.Active.Import.Register,Voltage"})
    assert refused == {"status": "Rejected"}
    assert accepted == {"status": "Accepted"} and aligned == {"status": "Accepted"}


def measurands_of(value: dict[str, Any]) -> set[str]:
    return {s["measurand"] for s in value["sampledValue"]}


@pytest.mark.parametrize("version", ["201", "16"])
async def test_the_end_message_carries_the_chosen_sampled_and_clock_aligned_measurands(version: str, tmp_path: Path) -> None:
    async with rig_on_dev_csms(version, tmp_path / "station.db") as rig:
        assert rig.core is not None and rig.esp is not None
        core = rig.core
        if version == "201":
            assert (await set_201(rig, "SampledDataCtrlr", "TxEndedMeasurands", "Voltage"))["attributeStatus"] == "Accepted"
            assert (await set_201(rig, "AlignedDataCtrlr", "TxEndedMeasurands",
                                  "Energy.Active.Import.Register"))["attributeStatus"] == "Accepted"
            assert (await set_201(rig, "AlignedDataCtrlr", "TxEndedInterval", "900"))["attributeStatus"] == "Accepted"
        else:
            for key, value in (("StopTxnSampledData", "Voltage"), ("StopTxnAlignedData", "Energy.Active.Import.Register")):
                assert (await rig.csms.call("CP", "ChangeConfiguration", {"key": key, "value": value}))["status"] == "Accepted"
        core.on_meter_reading(READING)
        core.request_start(1, "TAG1", "ISO14443", trigger="Authorized")
        rig.esp.plug()
        core.device_model.set("AlignedDataCtrlr", "SendDuringIdle", True)  # keep the clock values for the end only
        # 2.0.1: the AlignedDataCtrlr.TxEndedInterval grid; 1.6: ClockAlignedDataInterval's
        boundary = core.record_clock_aligned if version == "16" else lambda at: core.tx_ended.clock_boundary(at, "201")
        boundary(datetime(2026, 5, 1, 10, 0, tzinfo=UTC))
        core.on_meter_reading(MeterReading(5600.0, voltage_v=(231.0, 231.0, 231.0)))
        boundary(datetime(2026, 5, 1, 10, 15, tzinfo=UTC))
        core.request_stop(connector_id=1)
        await rig.wait_outbox_empty()
        if version == "201":
            ended = [r for r in rig.calls("TransactionEvent") if r.payload["eventType"] == "Ended"][0]
            values = ended.payload["meterValue"]
        else:
            values = rig.calls("StopTransaction")[0].payload["transactionData"]
    clock = [v for v in values if v["sampledValue"][0]["context"] == "Sample.Clock"]
    end = [v for v in values if v["sampledValue"][0]["context"] == "Transaction.End"]
    assert [v["timestamp"] for v in clock] == ["2026-05-01T10:00:00.000Z", "2026-05-01T10:15:00.000Z"]
    assert all(measurands_of(v) == {"Energy.Active.Import.Register"} for v in clock)
    assert [float(v["sampledValue"][0]["value"]) for v in clock] == [5000.0, 5600.0]
    assert len(end) == 1 and measurands_of(end[0]) == {"Voltage"}


async def test_1_6_meter_value_sample_interval_0_turns_periodic_values_off(tmp_path: Path) -> None:
    async with rig_on_dev_csms("16", tmp_path / "station.db") as rig:
        assert rig.core is not None and rig.esp is not None
        answer = await rig.csms.call("CP", "ChangeConfiguration", {"key": "MeterValueSampleInterval", "value": "0"})
        assert answer == {"status": "Accepted"}
        rig.core.on_meter_reading(READING)
        rig.core.request_start(1, "TAG1", "ISO14443", trigger="Authorized")
        rig.esp.plug()
        rig.core.connectors[1].last_periodic = 0.0  # long ago
        rig.core.tick()
        await rig.wait_outbox_empty()
        assert not [r for r in rig.calls("MeterValues") if "transactionId" in r.payload]
