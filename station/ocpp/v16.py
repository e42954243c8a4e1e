"""OCPP 1.6J: payload shapes and CSMS-initiated actions over the shared session."""

from __future__ import annotations

from typing import Any

from ocpp.routing import after

from station import __version__
from station.core.station import Connector
from station.core.store import OutboxEntry
from station.ocpp.base import Rejected, StationSession, _iso
from station.ocpp.meter_values import sampled_values
from station.ocpp.rpc import on_raw

STOP_REASONS = {"DeAuthorized", "EmergencyStop", "EVDisconnected", "HardReset", "Local", "Other", "PowerLoss",
                "Reboot", "Remote", "SoftReset", "UnlockCommand"}
REASON_FROM_201 = {"ImmediateReset": "HardReset"}


class Session16(StationSession):
    version = "16"

    def boot_request(self) -> tuple[str, dict[str, Any]]:
        return "BootNotification", {
            "chargePointVendor": "ocpp-station", "chargePointModel": "ocpp-station", "firmwareVersion": __version__,
        }

    def status_key(self, conn: Connector) -> tuple[str, str]:
        return conn.derived.status.value, conn.derived.error_code

    def status_request(self, conn: Connector) -> tuple[str, dict[str, Any]]:
        payload: dict[str, Any] = {
            "connectorId": conn.id,
            "errorCode": conn.derived.error_code,
            "status": conn.derived.status.value,
            "timestamp": _iso(self.core.clock.now()),
        }
        if conn.derived.info:
            payload["info"] = conn.derived.info[:50]
        return "StatusNotification", payload

    def authorize_request(self, id_token: str, token_type: str) -> tuple[str, dict[str, Any]]:
        return "Authorize", {"idTag": id_token[:20]}

    def transaction_request(self, entry: OutboxEntry) -> tuple[str, dict[str, Any]] | None:
        data = entry.data
        stamp = self.timestamp_of(entry)
        if entry.kind == "started":
            return "StartTransaction", {
                "connectorId": entry.connector_id,
                "idTag": (data.get("id_token") or "")[:20],
                "meterStart": int(round(data.get("meter_start_wh") or 0)),
                "timestamp": stamp,
            }
        csms_id = self._csms_id(entry)
        if entry.kind == "updated":
            samples = sampled_values(data.get("meter"), "Sample.Periodic", as_text=True)
            if entry.trigger != "MeterValuePeriodic" or not samples:
                return None  # 1.6 conveys charging-state changes through StatusNotification
            return "MeterValues", {
                "connectorId": entry.connector_id, "transactionId": csms_id,
                "meterValue": [{"timestamp": stamp, "sampledValue": samples}],
            }
        reason = REASON_FROM_201.get(data.get("stop_reason") or "Other", data.get("stop_reason") or "Other")
        payload: dict[str, Any] = {
            "transactionId": csms_id,
            "meterStop": int(round(data.get("meter_stop_wh") or data.get("meter_start_wh") or 0)),
            "timestamp": stamp,
            "reason": reason if reason in STOP_REASONS else "Other",
        }
        samples = sampled_values(data.get("meter"), "Transaction.End", as_text=True)
        if samples:
            payload["transactionData"] = [{"timestamp": stamp, "sampledValue": samples}]
        return "StopTransaction", payload

    def _csms_id(self, entry: OutboxEntry) -> int:
        tx = self.core.store.get_transaction(entry.transaction_id)
        if tx is None or tx.csms_id is None:
            raise Rejected("the CSMS has not assigned a transactionId (StartTransaction not confirmed)")
        return int(tx.csms_id)

    def transaction_confirmed(self, entry: OutboxEntry, response: dict[str, Any]) -> None:
        if entry.kind == "started":
            self.core.set_csms_transaction_id(entry.transaction_id, str(response["transactionId"]))
        status = (response.get("idTagInfo") or {}).get("status", "Accepted")
        if entry.kind == "started" and status != "Accepted":
            self.core.request_stop(entry.transaction_id, reason="DeAuthorized", trigger="Deauthorized")

    # --- CSMS → station ------------------------------------------------------------
    @on_raw("RemoteStartTransaction")
    def _remote_start(self, payload: dict[str, Any]) -> dict[str, Any]:
        ok, _ = self.core.request_start(payload.get("connectorId"), payload["idTag"], "Central")
        self.note_incoming("RemoteStartTransaction", "Accepted" if ok else "Rejected")
        return {"status": "Accepted" if ok else "Rejected"}

    @on_raw("RemoteStopTransaction")
    def _remote_stop(self, payload: dict[str, Any]) -> dict[str, Any]:
        tx = self.core.transaction_by_csms_id(str(payload["transactionId"]))
        ok = tx is not None and self.core.request_stop(tx.id, reason="Remote", trigger="RemoteStop")
        self.note_incoming("RemoteStopTransaction", "Accepted" if ok else "Rejected")
        return {"status": "Accepted" if ok else "Rejected"}

    @on_raw("ChangeAvailability")
    def _change_availability(self, payload: dict[str, Any]) -> dict[str, Any]:
        status = self.core.set_availability(payload["connectorId"], payload["type"] == "Operative")
        self.note_incoming("ChangeAvailability", status)
        return {"status": status}

    @on_raw("TriggerMessage")
    def _trigger(self, payload: dict[str, Any]) -> dict[str, Any]:
        known = payload["requestedMessage"] in ("BootNotification", "Heartbeat", "StatusNotification")
        return {"status": "Accepted" if known else "NotImplemented"}

    @after("TriggerMessage")
    async def _after_trigger(self, requested_message: str, **_: Any) -> None:
        if requested_message == "Heartbeat":
            await self.heartbeat()
        elif requested_message == "StatusNotification":
            await self.send_statuses(force=True)
        elif requested_message == "BootNotification":
            await self.exchange(*self.boot_request())


__all__ = ["Session16", "Rejected"]
