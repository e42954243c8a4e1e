"""OCPP 1.6J: message shapes and CSMS-initiated handlers over the shared `BaseSession`.

1.6 differences the shared core hides: transactions are StartTransaction / MeterValues /
StopTransaction and the CSMS numbers them (its transactionId is stored with the transaction,
so entries queued after an unconfirmed start wait for it); a ChargingStateChanged update has
no 1.6 message (the StatusNotification carries it) and leaves the outbox unsent.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import structlog

from station.core.reservations import Reservation
from station.core.standard_variables import FREE_VEND_ID_TAG
from station.core.station import AuthResult, Connector, meter_json
from station.core.store import OutboxEntry
from station.diagnostics.log_upload import LogNote, LogRequest, LogStatus
from station.trust.firmware import FirmwareNote, FirmwareRequest, FirmwareStatus
from station.ocpp import variables
from station.ocpp.base import BaseSession, Unsendable, iso
from station.ocpp.base import charging_profile, composite_periods, profile_purpose
from station.ocpp.meter_values import ended_meter_values
from station.ocpp.meter_values import sampled_values as _samples
from ocpp.exceptions import NotSupportedError

from station.ocpp.rpc import after_raw, on_raw
from station.ocpp.security import SecurityHandlers
from station.ocpp.base import log_request, parse_time

log = structlog.get_logger(__name__)

STOP_REASONS = {"EmergencyStop", "EVDisconnected", "HardReset", "Local", "Other", "PowerLoss", "Reboot", "Remote",
                "SoftReset", "UnlockCommand", "DeAuthorized"}
STOP_REASON_FROM_201 = {"ImmediateReset": "HardReset", "StoppedByEV": "EVDisconnected", "Timeout": "Other"}
ERROR_CODES = {"ConnectorLockFailure", "EVCommunicationError", "GroundFailure", "HighTemperature", "InternalError",
               "LocalListConflict", "NoError", "OtherError", "OverCurrentFailure", "PowerMeterFailure",
               "PowerSwitchFailure", "ReaderFailure", "ResetFailure", "UnderVoltage", "OverVoltage", "WeakSignal"}
UNLOCK_STATUS = {"Unlocked": "Unlocked", "UnlockFailed": "UnlockFailed", "OngoingAuthorizedTransaction": "UnlockFailed",
                 "UnknownConnector": "NotSupported"}

FIRMWARE_STATUS = {
    FirmwareStatus.IDLE: "Idle",
    FirmwareStatus.DOWNLOADING: "Downloading",
    FirmwareStatus.DOWNLOADED: "Downloaded",
    FirmwareStatus.DOWNLOAD_FAILED: "DownloadFailed",
    FirmwareStatus.INVALID_SIGNATURE: "InstallationFailed",
    FirmwareStatus.INSTALL_VERIFICATION_FAILED: "InstallationFailed",
    FirmwareStatus.INSTALLING: "Installing",
    FirmwareStatus.INSTALLED: "Installed",
    FirmwareStatus.INSTALLATION_FAILED: "InstallationFailed",
}
"""2.0.1-only steps (DownloadScheduled, SignatureVerified, InstallScheduled) are not sent in 1.6..."""
FIRMWARE_STATUS_TRIGGERED = {
    FirmwareStatus.DOWNLOAD_SCHEDULED: "Idle",
    FirmwareStatus.SIGNATURE_VERIFIED: "Downloaded",
    FirmwareStatus.INSTALL_SCHEDULED: "Downloaded",
}
"""...but a triggered notification names the nearest 1.6 status."""


DIAGNOSTICS_STATUS = {LogStatus.IDLE: "Idle", LogStatus.UPLOADING: "Uploading", LogStatus.UPLOADED: "Uploaded"}
"""DiagnosticsStatusNotification's words; every failure is UploadFailed, a canceled upload says nothing."""
LOG_STATUS_16 = frozenset(LogStatus) - {LogStatus.ACCEPTED_CANCELED}
"""The whitepaper's LogStatusNotification lacks AcceptedCanceled."""


def sampled_values(meter: dict[str, Any] | None, context: str, measurands: list[str] | None = None) -> list[dict[str, Any]]:
    return _samples(meter, context, as_text=True, measurands=measurands)


def whole_wh(value: Any) -> int:
    return int(round(float(value))) if value is not None else 0


class V16Session(SecurityHandlers, BaseSession):
    VERSION = "16"

    # ---- station → CSMS -----------------------------------------------------------
    def boot_payload(self) -> dict[str, Any]:
        info = self.client.info
        payload = {"chargePointVendor": info.vendor, "chargePointModel": info.model, "firmwareVersion": info.firmware_version}
        if info.serial_number:
            payload["chargePointSerialNumber"] = info.serial_number
        return payload

    def status_payload(self, conn: Connector) -> tuple[Any, dict[str, Any]]:
        derived = conn.derived
        error = derived.error_code if derived.error_code in ERROR_CODES else "OtherError"
        payload: dict[str, Any] = {"connectorId": conn.id, "errorCode": error, "status": derived.status.value,
                                   "timestamp": iso(self.core.clock.now())}
        if derived.info:
            payload["info"] = derived.info[:50]
        return (derived.status, error, derived.info), payload

    def _csms_id(self, entry: OutboxEntry) -> int:
        tx = self.core.store.get_transaction(entry.transaction_id)
        if tx is None or tx.csms_id is None:
            raise Unsendable("StartTransaction of this transaction was never confirmed; no transactionId")
        return int(tx.csms_id)

    def transaction_message(self, entry: OutboxEntry) -> tuple[str, dict[str, Any]] | None:
        data = entry.data
        timestamp = self.event_time(entry)
        meter = data.get("meter")
        if entry.kind == "started":
            payload: dict[str, Any] = {"connectorId": entry.connector_id, "idTag": self._start_id_tag(data),
                                       "meterStart": whole_wh(data.get("meter_start_wh")), "timestamp": timestamp}
            if data.get("reservation_id") is not None:
                payload["reservationId"] = int(data["reservation_id"])
            return "StartTransaction", payload
        if entry.kind == "updated":
            if entry.trigger not in ("MeterValuePeriodic", "MeterValueClock", "Trigger"):
                return None  # e.g. ChargingStateChanged: 1.6 says it with StatusNotification
            samples = sampled_values(meter, {"MeterValuePeriodic": "Sample.Periodic", "MeterValueClock": "Sample.Clock"}.get(entry.trigger, "Trigger"),
                                     data.get("measurands"))
            if not samples:
                return None
            return "MeterValues", {"connectorId": entry.connector_id, "transactionId": self._csms_id(entry),
                                   "meterValue": [{"timestamp": timestamp, "sampledValue": samples}]}
        reason = data.get("stop_reason") or "Other"
        reason = STOP_REASON_FROM_201.get(reason, reason)
        payload = {"transactionId": self._csms_id(entry), "meterStop": whole_wh(data.get("meter_stop_wh")),
                   "timestamp": timestamp, "reason": reason if reason in STOP_REASONS else "Other"}
        if data.get("stop_id_token") or data.get("id_token"):  # who stopped it, else who started it
            payload["idTag"] = (data.get("stop_id_token") or data["id_token"])[:20]
        samples = sampled_values(meter, "Transaction.End", data.get("measurands"))  # StopTxnSampledData
        # with the readings kept during the transaction (StopTxnSampledData, StopTxnAlignedData)
        values = ended_meter_values(data, {"timestamp": timestamp, "sampledValue": samples} if samples else None,
                                    as_text=True)
        if values:
            payload["transactionData"] = values
        return "StopTransaction", payload

    def _start_id_tag(self, data: dict[str, Any]) -> str:
        """The driver's token, or for a transaction started without one the configured free-vend
        idTag (AuthCtrlr.FreeVendIdTag, 1.6 key FreeVendIdTag): 1.6 requires an idTag."""
        token = data.get("id_token")
        if token:
            return str(token)[:20]
        return str(self.core.device_model.value("AuthCtrlr", "FreeVendIdTag") or FREE_VEND_ID_TAG)[:20]

    def on_transaction_confirmed(self, entry: OutboxEntry, response: dict[str, Any]) -> None:
        if entry.kind == "started" and not entry.data.get("id_token"):
            # The free-vend idTag stands for "no token yet": its verdict is neither cached nor acted on;
            # the driver's token is checked by Authorize when it comes.
            self.core.set_csms_transaction_id(entry.transaction_id, str(response["transactionId"]))
            log.info("free-vend idTag answered", transaction_id=entry.transaction_id,
                     status=(response.get("idTagInfo") or {}).get("status"))
            return
        if entry.kind == "ended" and response.get("idTagInfo"):  # the cache learns the idTag's status
            self.core.auth.on_transaction_token(entry.transaction_id, self.authorize_result(response),
                                                entry.data.get("stop_id_token") or entry.data.get("id_token"))
        if entry.kind != "started":
            return
        self.core.set_csms_transaction_id(entry.transaction_id, str(response["transactionId"]))
        # 1.6 §5.x: the cache learns the verdict; a refused idTag stops (StopTransactionOnInvalidId) or limits
        self.core.auth.on_transaction_token(entry.transaction_id, self.authorize_result(response))

    def authorize_payload(self, id_token: str, token_type: str) -> dict[str, Any]:
        return {"idTag": id_token[:20]}

    def authorize_result(self, response: dict[str, Any]) -> AuthResult:
        info = response.get("idTagInfo") or {}
        return AuthResult(str(info.get("status", "Invalid")), info.get("expiryDate"), info.get("parentIdTag"))

    def firmware_status_payload(self, note: FirmwareNote, *, triggered: bool = False) -> dict[str, Any] | None:
        status = FIRMWARE_STATUS.get(note.status) or (FIRMWARE_STATUS_TRIGGERED.get(note.status) if triggered else None)
        return {"status": status} if status else None

    async def send_firmware_status(self, note: FirmwareNote, *, triggered: bool = False, signed: bool = False) -> None:
        """A SignedUpdateFirmware (it has a requestId) reports with SignedFirmwareStatusNotification and
        the whitepaper's (2.0.1) statuses; a plain UpdateFirmware with 1.6's FirmwareStatusNotification."""
        if note.request_id is None and not signed:
            await super().send_firmware_status(note, triggered=triggered)
            return
        payload: dict[str, Any] = {"status": note.status.value}
        if note.request_id is not None:
            payload["requestId"] = note.request_id
        await self.request("SignedFirmwareStatusNotification", payload)

    def log_status_message(self, note: LogNote, *, triggered: bool = False) -> tuple[str, dict[str, Any]] | None:
        """GetDiagnostics' progress: DiagnosticsStatusNotification; the whitepaper's GetLog and an
        ExtendedTriggerMessage LogStatusNotification (`triggered`): LogStatusNotification."""
        if note.origin == "GetDiagnostics" and not triggered:
            if note.status is LogStatus.ACCEPTED_CANCELED:
                return None
            return "DiagnosticsStatusNotification", {"status": DIAGNOSTICS_STATUS.get(note.status, "UploadFailed")}
        if note.status not in LOG_STATUS_16:
            return None
        payload: dict[str, Any] = {"status": note.status.value}
        if note.request_id is not None and note.origin == "GetLog":
            payload["requestId"] = note.request_id
        return "LogStatusNotification", payload

    # ---- CSMS → station -------------------------------------------------------------
    @on_raw("RemoteStartTransaction")
    async def on_remote_start(self, payload: dict[str, Any]) -> dict[str, Any]:
        connector = payload.get("connectorId")
        if self.core.auth.setting("AuthCtrlr", "AuthorizeRemoteStart"):  # AuthorizeRemoteTxRequests
            return {"status": "Rejected" if self.core.start_refusal(connector, payload["idTag"]) else "Accepted"}
        ok, _ = self.core.request_start(connector, payload["idTag"], "Central", trigger="RemoteStart")
        if ok:
            self.remote_start_profile(connector, payload.get("chargingProfile"))
            await self.controller_first()
        return {"status": "Accepted" if ok else "Rejected"}

    @after_raw("RemoteStartTransaction")
    async def after_remote_start(self, payload: dict[str, Any]) -> None:
        if self.core.auth.setting("AuthCtrlr", "AuthorizeRemoteStart"):
            await self.start_authorized_remotely(payload.get("connectorId"), payload["idTag"], "Central", None,
                                                 payload.get("chargingProfile"))

    @on_raw("ReserveNow")
    def on_reserve_now(self, payload: dict[str, Any]) -> dict[str, Any]:
        connector = int(payload["connectorId"])
        if connector == 0 and not self.core.reservations.setting("NonEvseSpecific"):
            return {"status": "Rejected"}  # ReserveConnectorZeroSupported is false
        status = self.core.reservations.reserve(Reservation(
            id=int(payload["reservationId"]), connector_id=connector or None, id_token=payload["idTag"],
            token_type="Central", group_id=payload.get("parentIdTag"), expires_at=payload["expiryDate"]))
        return {"status": status}

    @on_raw("CancelReservation")
    def on_cancel_reservation(self, payload: dict[str, Any]) -> dict[str, Any]:
        return {"status": "Accepted" if self.core.reservations.cancel(int(payload["reservationId"])) else "Rejected"}

    @on_raw("RemoteStopTransaction")
    def on_remote_stop(self, payload: dict[str, Any]) -> dict[str, Any]:
        tx = self.core.transaction_by_csms_id(str(payload["transactionId"]))
        stopped = tx is not None and self.core.request_stop(tx.id, reason="Remote", trigger="RemoteStop")
        return {"status": "Accepted" if stopped else "Rejected"}

    @on_raw("Reset")
    def on_reset(self, payload: dict[str, Any]) -> dict[str, Any]:
        if self.client.on_reset is None:
            return {"status": "Rejected"}
        kind = payload["type"]
        self.core.end_all_transactions("HardReset" if kind == "Hard" else "SoftReset", "ResetCommand")
        self.client.schedule_reset(kind, when_idle=False)
        return {"status": "Accepted"}

    @on_raw("ChangeAvailability")
    def on_change_availability(self, payload: dict[str, Any]) -> dict[str, Any]:
        return {"status": self.core.set_availability(int(payload["connectorId"]), payload["type"] == "Operative")}

    @on_raw("UnlockConnector")
    def on_unlock(self, payload: dict[str, Any]) -> dict[str, Any]:
        return {"status": UNLOCK_STATUS.get(self.core.unlock(int(payload["connectorId"])), "UnlockFailed")}

    @on_raw("TriggerMessage")
    def on_trigger(self, payload: dict[str, Any]) -> dict[str, Any]:
        message = payload["requestedMessage"]
        connector = payload.get("connectorId")
        if connector and connector not in self.core.connectors:
            return {"status": "Rejected"}
        if message in ("Heartbeat", "StatusNotification", "BootNotification", "FirmwareStatusNotification",
                       "DiagnosticsStatusNotification"):
            return {"status": "Accepted"}
        if message == "MeterValues":
            return {"status": "Accepted" if any(self.core.current_reading(c) for c in self._targets(connector)) else "Rejected"}
        return {"status": "NotImplemented"}

    @after_raw("TriggerMessage")
    async def after_trigger(self, payload: dict[str, Any]) -> None:
        message = payload["requestedMessage"]
        connector = payload.get("connectorId")
        if message == "Heartbeat":
            await self.send_heartbeat()
        elif message == "BootNotification":
            response = await self.request("BootNotification", self.boot_payload())
            self.trust_time(response.get("currentTime"))
        elif message == "StatusNotification":
            for conn in self._targets(connector):
                await self.send_status(conn, force=True)
        elif message == "FirmwareStatusNotification":
            await self.send_firmware_status(self.client.firmware_note(), triggered=True)
        elif message == "DiagnosticsStatusNotification":
            note = self.client.log_note()
            status = DIAGNOSTICS_STATUS.get(note.status, "Idle")
            await self.request("DiagnosticsStatusNotification", {"status": status})
        elif message == "MeterValues":
            for conn in self._targets(connector):
                reading = self.core.current_reading(conn)
                if reading:
                    body: dict[str, Any] = {"connectorId": conn.id, "meterValue": [
                        {"timestamp": iso(self.core.clock.now()), "sampledValue": sampled_values(meter_json(reading), "Trigger",
                                                                                  self.core.selected_measurands("clock"))}]}
                    if conn.transaction and conn.transaction.csms_id:
                        body["transactionId"] = int(conn.transaction.csms_id)
                    await self.request("MeterValues", body)

    def _targets(self, connector: int | None) -> list[Connector]:
        return [self.core.connectors[connector]] if connector else list(self.core.connectors.values())

    @on_raw("UpdateFirmware")
    async def on_update_firmware(self, payload: dict[str, Any]) -> dict[str, Any]:
        """1.6's answer is empty: a request that cannot be taken is only logged.

        An unsigned update is refused with CALLERROR NotSupported (whitepaper L01.FR.20) unless the
        station's configuration allows it (STATION_FIRMWARE_ALLOW_UNSIGNED, for development rigs).
        """
        if self.client.firmware is None or not self.client.firmware.allow_unsigned:
            raise NotSupportedError(details={"cause": "unsigned UpdateFirmware refused; use SignedUpdateFirmware"})
        request = FirmwareRequest(
            location=payload["location"],
            retrieve_at=parse_time(payload["retrieveDate"]) or datetime.now(UTC),
            retries=payload.get("retries"),
            retry_interval_s=payload.get("retryInterval"),
        )
        status, reason = await self.start_firmware_update(request)
        if status not in ("Accepted", "AcceptedCanceled"):
            self.log.warning("ocpp: UpdateFirmware not carried out", reason=reason)
        return {}

    @after_raw("UpdateFirmware")
    async def after_update_firmware(self, payload: dict[str, Any]) -> None:
        self.launch_firmware_update()

    @on_raw("SignedUpdateFirmware")
    async def on_signed_update_firmware(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Security whitepaper L01: the 2.0.1 UpdateFirmware under another name."""
        firmware = payload["firmware"]
        request = FirmwareRequest(
            location=firmware["location"],
            retrieve_at=parse_time(firmware["retrieveDateTime"]) or datetime.now(UTC),
            request_id=int(payload["requestId"]),
            install_at=parse_time(firmware["installDateTime"]) if firmware.get("installDateTime") else None,
            signing_certificate=firmware["signingCertificate"],
            signature=firmware["signature"],
            retries=payload.get("retries"),
            retry_interval_s=payload.get("retryInterval"),
        )
        status, _ = await self.start_firmware_update(request)
        return {"status": status}

    @after_raw("SignedUpdateFirmware")
    async def after_signed_update_firmware(self, payload: dict[str, Any]) -> None:
        self.launch_firmware_update()

    @on_raw("ExtendedTriggerMessage")
    def on_extended_trigger(self, payload: dict[str, Any]) -> dict[str, Any]:
        message = payload["requestedMessage"]
        connector = payload.get("connectorId")
        if connector and connector not in self.core.connectors:
            return {"status": "Rejected"}
        if message == "SignChargePointCertificate":
            return {"status": self.trigger_certificate_renewal()}
        if message in ("FirmwareStatusNotification", "LogStatusNotification"):
            return {"status": "Accepted"}
        if message in ("BootNotification", "Heartbeat", "MeterValues", "StatusNotification"):
            return self.on_trigger(payload)
        return {"status": "NotImplemented"}

    @after_raw("ExtendedTriggerMessage")
    async def after_extended_trigger(self, payload: dict[str, Any]) -> None:
        message = payload["requestedMessage"]
        if message == "SignChargePointCertificate" and self.client.renewal.refusal() is None:
            self.client.renewal.start("ExtendedTriggerMessage")
        elif message == "FirmwareStatusNotification":  # L01.FR.28/29: the signed flow's status, Idle when none
            await self.send_firmware_status(self.client.firmware_note(), triggered=True, signed=True)
        elif message == "LogStatusNotification":
            await self.send_log_status(self.client.log_note(), triggered=True)
        elif message in ("BootNotification", "Heartbeat", "MeterValues", "StatusNotification"):
            await self.after_trigger(payload)

    @on_raw("GetDiagnostics")
    async def on_get_diagnostics(self, payload: dict[str, Any]) -> dict[str, Any]:
        """1.6: the answer names the file; no file name means no upload will follow."""
        request = LogRequest(
            location=payload["location"], origin="GetDiagnostics",
            since=parse_time(payload["startTime"]) if payload.get("startTime") else None,
            until=parse_time(payload["stopTime"]) if payload.get("stopTime") else None,
            retries=payload.get("retries"), retry_interval_s=payload.get("retryInterval"),
        )
        answer = await self.start_log_upload(request)
        return {"fileName": answer.filename} if answer.filename and answer.status != "Rejected" else {}

    @after_raw("GetDiagnostics")
    def after_get_diagnostics(self, payload: dict[str, Any]) -> None:
        self.launch_log_upload()

    @on_raw("GetLog")
    async def on_get_log(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The 1.6 security whitepaper's GetLog: the 2.0.1 message."""
        answer = await self.start_log_upload(log_request(payload))
        result: dict[str, Any] = {"status": answer.status}
        if answer.filename:
            result["filename"] = answer.filename
        return result

    @after_raw("GetLog")
    def after_get_log(self, payload: dict[str, Any]) -> None:
        self.launch_log_upload()

    @on_raw("GetConfiguration")
    def on_get_configuration(self, payload: dict[str, Any]) -> dict[str, Any]:
        return variables.get_configuration(self.core.device_model, payload)

    @on_raw("ChangeConfiguration")
    def on_change_configuration(self, payload: dict[str, Any]) -> dict[str, Any]:
        return variables.change_configuration(self.core.device_model, payload)

    def _apply_profile(self, connector: int, raw: dict[str, Any], *, transaction_id: str | None = None) -> str | None:
        """Install a csChargingProfiles on a connector; why not, or None when installed."""
        schedule = raw.get("chargingSchedule") or {}
        if raw["chargingProfileKind"] == "Absolute" and not schedule.get("startSchedule"):
            raw = {**raw, "chargingProfileKind": "Relative"}  # 1.6: no startSchedule → relative to charging start
        profile = charging_profile(connector, raw, schedule, profile_id=int(raw["chargingProfileId"]),
                                   transaction_id=transaction_id)
        if isinstance(profile, str):
            return profile
        return self.core.charging.install(profile, replace_same_stack=True)

    @on_raw("SetChargingProfile")
    def on_set_charging_profile(self, payload: dict[str, Any]) -> dict[str, Any]:
        connector = int(payload["connectorId"])
        profile = payload["csChargingProfiles"]
        if connector != 0 and connector not in self.core.connectors:
            return {"status": "Rejected"}
        transaction_id = None
        if profile["chargingProfilePurpose"] == "TxProfile":
            conn = self.core.connectors.get(connector)
            if conn is None or conn.transaction is None:
                return {"status": "Rejected"}  # a TxProfile needs an active transaction
            if "transactionId" in profile and str(profile["transactionId"]) != conn.transaction.csms_id:
                return {"status": "Rejected"}
            transaction_id = conn.transaction.id
        reason = self._apply_profile(connector, profile, transaction_id=transaction_id)
        if reason:
            self.log.info("ocpp: charging profile rejected", reason=reason)
            return {"status": "Rejected"}
        return {"status": "Accepted"}

    @on_raw("ClearChargingProfile")
    def on_clear_charging_profile(self, payload: dict[str, Any]) -> dict[str, Any]:
        purpose = profile_purpose(payload["chargingProfilePurpose"]) if "chargingProfilePurpose" in payload else None
        cleared = self.core.charging.clear(
            profile_id=payload.get("id"), connector_id=payload.get("connectorId"),
            purpose=purpose, stack_level=payload.get("stackLevel"))
        return {"status": "Accepted" if cleared else "Unknown"}

    @on_raw("GetCompositeSchedule")
    def on_get_composite_schedule(self, payload: dict[str, Any]) -> dict[str, Any]:
        connector = int(payload["connectorId"])
        if connector != 0 and connector not in self.core.connectors:
            return {"status": "Rejected"}
        unit = payload.get("chargingRateUnit", "A")
        start, periods = composite_periods(self.core, connector, int(payload["duration"]), unit)
        return {"status": "Accepted", "connectorId": connector, "scheduleStart": iso(start),
                "chargingSchedule": {"duration": int(payload["duration"]), "startSchedule": iso(start),
                                     "chargingRateUnit": unit, "chargingSchedulePeriod": periods}}

    @on_raw("SendLocalList")
    def on_send_local_list(self, payload: dict[str, Any]) -> dict[str, Any]:
        entries: dict[str, tuple[str, str | None] | None] = {}
        for item in payload.get("localAuthorizationList") or []:
            info = item.get("idTagInfo")
            entries[item["idTag"]] = (info["status"], info.get("expiryDate"), info.get("parentIdTag")) if info else None
        return {"status": self.update_local_list(int(payload["listVersion"]), payload["updateType"] == "Full", entries)}

    @on_raw("GetLocalListVersion")
    def on_get_local_list_version(self, payload: dict[str, Any]) -> dict[str, Any]:
        return {"listVersion": self.core.store.local_list_version()}
