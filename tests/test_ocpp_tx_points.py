"""Transaction start/stop points set by the CSMS, as the CSMS sees them (dev CSMS, schema-checked)."""

from __future__ import annotations

from pathlib import Path

from tests.ocpp_helpers import eventually, rig_on_dev_csms


async def test_2_0_1_a_transaction_started_at_plug_in_reports_its_token_when_a_remote_start_authorizes_it(
    tmp_path: Path,
) -> None:
    async with rig_on_dev_csms("201", tmp_path / "station.db") as rig:
        assert rig.core is not None and rig.esp is not None
        answer = await rig.csms.call("CP", "SetVariables", {"setVariableData": [
            {"component": {"name": "TxCtrlr"}, "variable": {"name": "TxStartPoint"}, "attributeValue": "EVConnected"},
            {"component": {"name": "TxCtrlr"}, "variable": {"name": "TxStopPoint"},
             "attributeValue": "ParkingBayOccupancy"}]})
        assert [r["attributeStatus"] for r in answer["setVariableResult"]] == ["Accepted", "Rejected"]
        rig.esp.plug()
        started = await rig.csms.wait_for("TransactionEvent", predicate=lambda r: r.payload["eventType"] == "Started")
        assert started.payload["triggerReason"] == "CablePluggedIn" and "idToken" not in started.payload
        tx_id = started.payload["transactionInfo"]["transactionId"]
        start = await rig.csms.call("CP", "RequestStartTransaction",
                                    {"idToken": {"idToken": "LATE-TOKEN", "type": "ISO14443"}, "remoteStartId": 9, "evseId": 1})
        assert start["status"] == "Accepted"
        authorized = await rig.csms.wait_for(
            "TransactionEvent", predicate=lambda r: r.payload["eventType"] == "Updated" and "idToken" in r.payload)
        assert authorized.payload["idToken"]["idToken"] == "LATE-TOKEN"
        assert authorized.payload["transactionInfo"]["transactionId"] == tx_id
        await eventually(lambda: ("authorize", None) in rig.esp.commands)  # only now may the relay close


async def test_1_6_stop_transaction_on_ev_side_disconnect_is_writable_and_the_unlock_key_is_not(tmp_path: Path) -> None:
    async with rig_on_dev_csms("16", tmp_path / "station.db") as rig:
        assert rig.core is not None and rig.esp is not None
        stop = await rig.csms.call("CP", "ChangeConfiguration", {"key": "StopTransactionOnEVSideDisconnect", "value": "false"})
        unlock = await rig.csms.call("CP", "ChangeConfiguration", {"key": "UnlockConnectorOnEVSideDisconnect", "value": "false"})
        assert stop == {"status": "Accepted"}
        assert unlock == {"status": "Rejected"}  # the ESP32 always releases the lock when the cable leaves the EV
        rig.core.request_start(1, "TAG1", "ISO14443", trigger="Authorized")
        rig.esp.plug()
        await rig.csms.wait_for("StartTransaction")
        rig.esp.unplug()
        await rig.wait_outbox_empty()
        assert rig.core.connectors[1].transaction is not None and not rig.calls("StopTransaction")
        answer = await rig.csms.call("CP", "RemoteStopTransaction", {"transactionId": rig.csms.last_transaction_id})
        assert answer == {"status": "Accepted"}
        stopped = await rig.csms.wait_for("StopTransaction")
        assert stopped.payload["reason"] == "Remote"
