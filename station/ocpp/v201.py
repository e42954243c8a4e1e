"""OCPP 2.0.1: payload shapes and CSMS-initiated actions over the shared session."""

from __future__ import annotations

from typing import Any

from ocpp.routing import after

from station import __version__
from station.core.model import ConnectorStatus
from station.core.station import Connector
from station.core.store import OutboxEntry
from station.ocpp.base import Rejected, StationSession, _iso
from station.ocpp.meter_values import sampled_values
from station.ocpp.rpc import on_raw

CONNECTOR_STATUS = {
    ConnectorStatus.AVAILABLE: "Available",
    ConnectorStatus.RESERVED: "Reserved",
    ConnectorStatus.UNAVAILABLE: "Unavailable",
    ConnectorStatus.FAULTED: "Faulted",
}
EVENT_TYPE = {"started": "Started", "updated": "Updated", "ended": "Ended"}
CONTEXT = {"started": "Transaction.Begin", "updated": "Sample.Periodic", "ended": "Transaction.End"}
TOKEN_TYPES = {"Central", "eMAID", "ISO14443", "ISO15693", "KeyCode", "Local", "MacAddress", "NoAuthorization"}


class Session201(StationSession):
    version = "201"

    def boot_request(self) -> tuple[str, dict[str, Any]]:
        return "BootNotification", {
            "reason": "PowerUp",
            "chargingStation": {"model": "ocpp-station", "vendorName": "ocpp-station", "firmwareVersion": __version__},
        }

    def status_key(self, conn: Connector) -> tuple[str, str]:
        return CONNECTOR_STATUS.get(conn.derived.status, "Occupied"), ""

    def status_request(self, conn: Connector) -> tuple[str, dict[str, Any]]:
        return "StatusNotification", {
            "timestamp": _iso(self.core.clock.now()),
            "connectorStatus": self.status_key(conn)[0],
            "evseId": conn.id,
            "connectorId": 1,
        }

    def authorize_request(self, id_token: str, token_type: str) -> tuple[str, dict[str, Any]]:
        return "Authorize", {"idToken": _token(id_token, token_type)}

    def transaction_request(self, entry: OutboxEntry) -> tuple[str, dict[str, Any]]:
        data = entry.data
        info: dict[str, Any] = {"transactionId": entry.transaction_id, "chargingState": data["charging_state"]}
        if entry.kind == "ended":
            info["stoppedReason"] = data.get("stop_reason") or "Other"
        if entry.kind == "started" and data.get("remote_start_id") is not None:
            info["remoteStartId"] = data["remote_start_id"]
        payload: dict[str, Any] = {
            "eventType": EVENT_TYPE[entry.kind],
            "timestamp": self.timestamp_of(entry),
            "triggerReason": entry.trigger,
            "seqNo": entry.seq_no,
            "transactionInfo": info,
            "evse": {"id": entry.connector_id, "connectorId": 1},
        }
        if entry.offline:
            payload["offline"] = True
        if entry.kind == "started" and data.get("id_token"):
            payload["idToken"] = _token(data["id_token"], data.get("token_type") or "Central")
        if entry.kind != "updated" or entry.trigger == "MeterValuePeriodic":
            samples = sampled_values(data.get("meter"), CONTEXT[entry.kind], as_text=False)
            if samples:
                payload["meterValue"] = [{"timestamp": payload["timestamp"], "sampledValue": samples}]
        return "TransactionEvent", payload

    def transaction_confirmed(self, entry: OutboxEntry, response: dict[str, Any]) -> None:
        status = (response.get("idTokenInfo") or {}).get("status", "Accepted")
        if entry.kind != "ended" and status != "Accepted":
            self.core.request_stop(entry.transaction_id, reason="DeAuthorized", trigger="Deauthorized")

    # --- CSMS → station ------------------------------------------------------------
    @on_raw("RequestStartTransaction")
    def _request_start(self, payload: dict[str, Any]) -> dict[str, Any]:
        token = payload["idToken"]
        ok, reason = self.core.request_start(
            payload.get("evseId"), token["idToken"], token.get("type", "Central"), payload.get("remoteStartId"),
        )
        self.note_incoming("RequestStartTransaction", "Accepted" if ok else "Rejected")
        result: dict[str, Any] = {"status": "Accepted" if ok else "Rejected"}
        if not ok:
            result["statusInfo"] = {"reasonCode": "Busy" if "busy" in reason else "Other", "additionalInfo": reason}
        return result

    @on_raw("RequestStopTransaction")
    def _request_stop(self, payload: dict[str, Any]) -> dict[str, Any]:
        ok = self.core.request_stop(payload["transactionId"], reason="Remote", trigger="RemoteStop")
        self.note_incoming("RequestStopTransaction", "Accepted" if ok else "Rejected")
        return {"status": "Accepted" if ok else "Rejected"}

    @on_raw("ChangeAvailability")
    def _change_availability(self, payload: dict[str, Any]) -> dict[str, Any]:
        evse = (payload.get("evse") or {}).get("id", 0)
        status = self.core.set_availability(evse, payload["operationalStatus"] == "Operative")
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


def _token(id_token: str, token_type: str) -> dict[str, str]:
    return {"idToken": id_token, "type": token_type if token_type in TOKEN_TYPES else "Central"}


__all__ = ["Session201", "Rejected"]
