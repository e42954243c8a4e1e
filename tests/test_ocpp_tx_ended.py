"""The end message's readings on the wire (station/ocpp/meter_values.py) and the 1.6 idTag of a
transaction started without a token (AuthCtrlr.FreeVendIdTag)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from station.core.model import MeterReading
from station.ocpp import meter_values
from station.ocpp.meter_values import ENDED_BYTES_MAX, ended_meter_values
from station.ocpp.schema import compiled_validator
from tests.ocpp_helpers import rig_on_dev_csms

FULL = {"energy_wh": 1000.0, "power_w": 11000.0, "current_a": [16.0, 16.0, 16.0], "voltage_v": [230.0, 231.0, 229.0],
        "frequency_hz": 50.0}
ALL = ["Energy.Active.Import.Register", "Power.Active.Import", "Current.Import", "Voltage", "Frequency"]


def long_session(readings: int) -> dict[str, object]:
    start = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)
    samples = [{"timestamp": (start + timedelta(seconds=10 * n)).isoformat(),
                "context": "Transaction.Begin" if n == 0 else "Sample.Periodic",
                "meter": {**FULL, "energy_wh": 1000.0 + n}} for n in range(readings)]
    return {"ended_samples": samples,
            "ended_measurands": {"Transaction.Begin": ALL, "Sample.Periodic": ALL, "Sample.Clock": []}}


@pytest.mark.parametrize("as_text", [False, True])
def test_a_long_session_s_end_readings_are_thinned_to_the_size_cap(as_text: bool) -> None:
    end = {"timestamp": "2026-05-01T18:00:00.000Z",
           "sampledValue": [{"value": "9999" if as_text else 9999.0, "context": "Transaction.End",
                             "measurand": "Energy.Active.Import.Register"}]}
    values = ended_meter_values(long_session(500), end, as_text=as_text)
    assert len(json.dumps(values, separators=(",", ":"))) <= ENDED_BYTES_MAX
    assert values[0]["sampledValue"][0]["context"] == "Transaction.Begin" and values[-1] is end
    stamps = [v["timestamp"] for v in values]
    assert stamps == sorted(stamps) and len(values) > 30


def test_the_ended_event_with_kept_readings_validates_against_the_2_0_1_schema() -> None:
    payload = {"eventType": "Ended", "timestamp": "2026-05-01T18:00:00.000Z", "triggerReason": "StopAuthorized",
               "seqNo": 3, "transactionInfo": {"transactionId": "t-1", "stoppedReason": "Local"},
               "meterValue": ended_meter_values(long_session(40), None, as_text=False)}
    validate = compiled_validator(2, "TransactionEvent", "2.0.1")
    assert validate is not None
    validate(payload)  # raises on a fault


async def test_1_6_a_transaction_started_without_a_token_is_sent_with_the_free_vend_id_tag(tmp_path: Path) -> None:
    async with rig_on_dev_csms("16", tmp_path / "station.db") as rig:
        assert rig.core is not None and rig.esp is not None
        rig.core.on_meter_reading(MeterReading(1000.0))
        rig.core.device_model.set("TxCtrlr", "TxStartPoint", "EVConnected")  # a 2.0.1 setting: starts at plug-in
        rig.esp.plug()
        await rig.wait_outbox_empty()
        start = rig.calls("StartTransaction")[0].payload
        transaction = rig.core.connectors[1].transaction
    assert start["idTag"] == "FreeVend"
    assert transaction is not None and transaction.csms_id is not None  # its messages can follow


async def test_1_6_the_free_vend_id_tag_is_configurable_and_never_empty(tmp_path: Path) -> None:
    async with rig_on_dev_csms("16", tmp_path / "station.db") as rig:
        assert rig.core is not None and rig.esp is not None
        empty = await rig.csms.call("CP", "ChangeConfiguration", {"key": "FreeVendIdTag", "value": ""})
        too_long = await rig.csms.call("CP", "ChangeConfiguration", {"key": "FreeVendIdTag", "value": "X" * 21})
        site = await rig.csms.call("CP", "ChangeConfiguration", {"key": "FreeVendIdTag", "value": "SITE-7-FREE"})
        shown = await rig.csms.call("CP", "GetConfiguration", {"key": ["FreeVendIdTag"]})
        rig.core.on_meter_reading(MeterReading(1000.0))
        rig.core.device_model.set("TxCtrlr", "TxStartPoint", "EVConnected")
        rig.esp.plug()
        await rig.wait_outbox_empty()
        start = rig.calls("StartTransaction")[0].payload
    assert empty == {"status": "Rejected"} and too_long == {"status": "Rejected"} and site == {"status": "Accepted"}
    assert shown["configurationKey"][0]["value"] == "SITE-7-FREE"
    assert start["idTag"] == "SITE-7-FREE"


async def test_1_6_a_refused_free_vend_id_tag_does_not_stop_the_transaction(tmp_path: Path) -> None:
    async with rig_on_dev_csms("16", tmp_path / "station.db") as rig:
        assert rig.core is not None and rig.esp is not None
        rig.csms.override("StartTransaction", lambda _: {"transactionId": 7, "idTagInfo": {"status": "Invalid"}})
        rig.core.on_meter_reading(MeterReading(1000.0))
        rig.core.device_model.set("TxCtrlr", "TxStartPoint", "EVConnected")
        rig.esp.plug()
        await rig.wait_outbox_empty()
        transaction = rig.core.connectors[1].transaction
        cached = rig.core.store.cache_lookup("FreeVend")
    assert transaction is not None and transaction.csms_id == "7"  # still running, waiting for a driver's token
    assert cached is None


@pytest.mark.parametrize("as_text", [False, True])
def test_an_end_message_is_thinned_only_when_its_full_readings_would_pass_the_cap(
    as_text: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    for readings in (1, 20, 55, 60, 65, 70, 121):
        sent = ended_meter_values(long_session(readings), None, as_text=as_text)
        with monkeypatch.context() as patch:
            patch.setattr(meter_values, "ENDED_BYTES_MAX", 10**9)
            full = ended_meter_values(long_session(readings), None, as_text=as_text)
        size = len(json.dumps(full, separators=(",", ":")))
        assert len(json.dumps(sent, separators=(",", ":"))) <= ENDED_BYTES_MAX
        assert (sent == full) == (size <= ENDED_BYTES_MAX), (readings, size)
