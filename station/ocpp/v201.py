"""OCPP 2.0.1: message shapes and CSMS-initiated handlers over the shared `BaseSession`."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from station.core.device_state import availability
from station.core.reservations import Reservation
from station.core.station import AuthResult, Connector
from station.core.store import OutboxEntry
from station.diagnostics.log_upload import LogNote
from station.network_profiles import VERSIONS, NetworkProfile
from station.network_profiles import refusal as profile_refusal
from station.trust.firmware import FirmwareNote, FirmwareRequest
from station.ocpp import variables
from station.ocpp.reports import Reporter
from station.ocpp.base import BaseSession, iso, log_request, parse_time
from station.ocpp.base import charging_profile, composite_periods, profile_purpose
from station.ocpp.charging_reports import ChargingProfileReports
from station.ocpp.customer_information import CustomerInformationHandlers
from station.ocpp.meter_values import ended_meter_values
from station.ocpp.meter_values import sampled_values as _samples
from station.ocpp.monitoring import MonitoringHandlers
from station.ocpp.reason_codes import reason_code
from station.ocpp.rpc import after_raw, on_raw
from station.ocpp.security import SecurityHandlers, report_event

TRIGGER_REASONS = {
    "Authorized", "CablePluggedIn", "ChargingRateChanged", "ChargingStateChanged", "Deauthorized",
    "EnergyLimitReached", "EVCommunicationLost", "EVConnectTimeout", "MeterValueClock", "MeterValuePeriodic",
    "TimeLimitReached", "Trigger", "UnlockCommand", "StopAuthorized", "EVDeparted", "EVDetected", "RemoteStop",
    "RemoteStart", "AbnormalCondition", "SignedDataReceived", "ResetCommand",
}
STOP_REASONS = {
    "DeAuthorized", "EmergencyStop", "EnergyLimitReached", "EVDisconnected", "GroundFault", "ImmediateReset",
    "Local", "LocalOutOfCredit", "MasterPass", "Other", "OvercurrentFault", "PowerLoss", "PowerQuality", "Reboot",
    "Remote", "SOCLimitReached", "StoppedByEV", "TimeLimitReached", "Timeout",
}
STOP_REASON_FROM_16 = {"HardReset": "ImmediateReset", "SoftReset": "Reboot", "UnlockCommand": "Local"}
TOKEN_TYPES = {"Central", "eMAID", "ISO14443", "ISO15693", "KeyCode", "Local", "MacAddress", "NoAuthorization"}
CONTEXT = {"started": "Transaction.Begin", "ended": "Transaction.End"}


def sampled_values(meter: dict[str, Any] | None, context: str, measurands: list[str] | None = None) -> list[dict[str, Any]]:
    return _samples(meter, context, as_text=False, measurands=measurands)


def status_info(reason: str) -> dict[str, str]:
    return {"reasonCode": reason_code(reason), "additionalInfo": reason[:512]}


class V201Session(ChargingProfileReports, CustomerInformationHandlers, MonitoringHandlers, SecurityHandlers, BaseSession):
    VERSION = "201"

    # ---- station → CSMS -----------------------------------------------------------
    def boot_payload(self) -> dict[str, Any]:
        info = self.client.info
        station: dict[str, Any] = {"model": info.model, "vendorName": info.vendor, "firmwareVersion": info.firmware_version}
        if info.serial_number:
            station["serialNumber"] = info.serial_number
        return {"chargingStation": station, "reason": self.client.boot_reason}

    def status_payload(self, conn: Connector) -> tuple[Any, dict[str, Any]]:
        status = availability(conn)
        return status, {"timestamp": iso(self.core.clock.now()), "connectorStatus": status, "evseId": conn.id, "connectorId": 1}

    def transaction_message(self, entry: OutboxEntry) -> tuple[str, dict[str, Any]]:
        data = entry.data
        info: dict[str, Any] = {"transactionId": entry.transaction_id, "chargingState": data.get("charging_state") or "EVConnected"}
        if entry.kind == "ended":
            reason = data.get("stop_reason") or "Other"
            reason = STOP_REASON_FROM_16.get(reason, reason)
            info["stoppedReason"] = reason if reason in STOP_REASONS else "Other"
        if data.get("remote_start_id") is not None and (
                entry.kind == "started" or (data.get("token_update") and entry.trigger == "RemoteStart")):
            # F01/F02: the event that tells the CSMS its RequestStartTransaction took effect names it
            info["remoteStartId"] = int(data["remote_start_id"])
        timestamp = self.event_time(entry)
        payload: dict[str, Any] = {
            "eventType": {"started": "Started", "updated": "Updated", "ended": "Ended"}[entry.kind],
            "timestamp": timestamp,
            "triggerReason": entry.trigger if entry.trigger in TRIGGER_REASONS else "Trigger",
            "seqNo": entry.seq_no,
            "transactionInfo": info,
            "evse": {"id": entry.connector_id, "connectorId": 1},
        }
        if entry.offline:
            payload["offline"] = True
        if entry.kind == "started" and data.get("reservation_id") is not None:
            payload["reservationId"] = int(data["reservation_id"])
        if (entry.kind == "started" or data.get("token_update")) and data.get("id_token"):
            token_type = data.get("token_type") or "Local"
            payload["idToken"] = {"idToken": data["id_token"], "type": token_type if token_type in TOKEN_TYPES else "Local"}
        if entry.kind == "ended" and data.get("stop_id_token"):  # E07: the token that stopped it
            token_type = data.get("stop_token_type") or "Local"
            payload["idToken"] = {"idToken": data["stop_id_token"],
                                  "type": token_type if token_type in TOKEN_TYPES else "Local"}
        context = CONTEXT.get(entry.kind, {"MeterValuePeriodic": "Sample.Periodic", "MeterValueClock": "Sample.Clock",
                                           "Trigger": "Trigger"}.get(entry.trigger, "Other"))
        samples = sampled_values(data.get("meter"), context, data.get("measurands"))
        value = {"timestamp": timestamp, "sampledValue": samples} if samples else None
        values = ended_meter_values(data, value, as_text=False) if entry.kind == "ended" else [value] if value else []
        if values:
            payload["meterValue"] = values
        return "TransactionEvent", payload

    def on_transaction_confirmed(self, entry: OutboxEntry, response: dict[str, Any]) -> None:
        if response.get("idTokenInfo"):  # E05 / C10: the cache learns it; a refused token stops or limits
            token = entry.data.get("id_token") if entry.kind == "started" else entry.data.get("stop_id_token")
            self.core.auth.on_transaction_token(entry.transaction_id, self.authorize_result(response), token)

    def authorize_payload(self, id_token: str, token_type: str) -> dict[str, Any]:
        return {"idToken": {"idToken": id_token, "type": token_type if token_type in TOKEN_TYPES else "Local"}}

    def authorize_result(self, response: dict[str, Any]) -> AuthResult:
        info = response.get("idTokenInfo") or {}
        group = (info.get("groupIdToken") or {}).get("idToken")
        return AuthResult(str(info.get("status", "Unknown")), info.get("cacheExpiryDateTime"), group)

    def firmware_status_payload(self, note: FirmwareNote, *, triggered: bool = False) -> dict[str, Any]:
        payload: dict[str, Any] = {"status": note.status.value}
        if note.request_id is not None:
            payload["requestId"] = note.request_id
        return payload

    def log_status_message(self, note: LogNote, *, triggered: bool = False) -> tuple[str, dict[str, Any]]:
        payload: dict[str, Any] = {"status": note.status.value}
        if note.request_id is not None:
            payload["requestId"] = note.request_id
        return "LogStatusNotification", payload

    # ---- CSMS → station -------------------------------------------------------------
    @on_raw("RequestStartTransaction")
    async def on_request_start(self, payload: dict[str, Any]) -> dict[str, Any]:
        token = payload["idToken"]
        evse = payload.get("evseId")
        running = self._tokenless_transaction(evse)  # F01: the EV started it (TxStartPoint EVConnected)
        if self.core.auth.setting("AuthCtrlr", "AuthorizeRemoteStart"):
            # F01.FR.xx: as if the token were presented here: answered now, authorized after the answer.
            reason = self.core.start_refusal(evse, token["idToken"])
            if reason:
                return {"status": "Rejected", "statusInfo": status_info(reason)}
            return {"status": "Accepted", **({"transactionId": running} if running else {})}
        ok, reason = self.core.request_start(evse, token["idToken"], token.get("type", "Central"),
                                             remote_start_id=payload["remoteStartId"], trigger="RemoteStart")
        if not ok:
            return {"status": "Rejected", "statusInfo": status_info(reason)}
        self.remote_start_profile(evse, payload.get("chargingProfile"))
        await self.controller_first()
        return {"status": "Accepted", **({"transactionId": running} if running else {})}

    def _tokenless_transaction(self, evse: int | None) -> str | None:
        """The id of the transaction a remote start would authorize: one the EV started without a token
        (F01.FR.xx: the answer then carries its transactionId so the CSMS can match its request)."""
        targets = [self.core.connectors[evse]] if evse in self.core.connectors else [] if evse else \
            list(self.core.connectors.values())
        tx = next((c.transaction for c in targets if c.transaction and c.transaction.id_token is None
                   and not c.pending), None)
        return tx.id if tx is not None else None

    @after_raw("RequestStartTransaction")
    async def after_request_start(self, payload: dict[str, Any]) -> None:
        if self.core.auth.setting("AuthCtrlr", "AuthorizeRemoteStart"):
            token = payload["idToken"]
            await self.start_authorized_remotely(payload.get("evseId"), token["idToken"], token.get("type", "Central"),
                                                 payload["remoteStartId"], payload.get("chargingProfile"))

    @on_raw("ReserveNow")
    def on_reserve_now(self, payload: dict[str, Any]) -> dict[str, Any]:
        token, group = payload["idToken"], payload.get("groupIdToken") or {}
        status = self.core.reservations.reserve(Reservation(
            id=int(payload["id"]), connector_id=payload.get("evseId"), id_token=token["idToken"],
            token_type=token["type"], group_id=group.get("idToken"), expires_at=payload["expiryDateTime"],
            connector_type=payload.get("connectorType")))
        return {"status": status}

    @on_raw("CancelReservation")
    def on_cancel_reservation(self, payload: dict[str, Any]) -> dict[str, Any]:
        return {"status": "Accepted" if self.core.reservations.cancel(int(payload["reservationId"])) else "Rejected"}


    @on_raw("GetTransactionStatus")
    def on_get_transaction_status(self, payload: dict[str, Any]) -> dict[str, Any]:
        """E14: is the transaction still running, and are its (or any transaction's) messages queued."""
        ongoing, queued = self.core.transaction_status(payload.get("transactionId"))
        answer: dict[str, Any] = {"messagesInQueue": queued}
        if ongoing is not None:
            answer["ongoingIndicator"] = ongoing
        return answer

    @on_raw("RequestStopTransaction")
    def on_request_stop(self, payload: dict[str, Any]) -> dict[str, Any]:
        stopped = self.core.request_stop(payload["transactionId"], reason="Remote", trigger="RemoteStop")
        return {"status": "Accepted" if stopped else "Rejected"}

    @on_raw("Reset")
    def on_reset(self, payload: dict[str, Any]) -> dict[str, Any]:
        if payload.get("evseId") or self.client.on_reset is None:
            return {"status": "Rejected"}
        busy = any(c.transaction for c in self.core.connectors.values())
        if payload["type"] == "OnIdle" and busy:
            self.client.schedule_reset("OnIdle", when_idle=True)
            return {"status": "Scheduled"}
        if busy:
            self.core.end_all_transactions("ImmediateReset", "ResetCommand")
        self.client.schedule_reset(payload["type"], when_idle=False)
        return {"status": "Accepted"}

    @on_raw("ChangeAvailability")
    def on_change_availability(self, payload: dict[str, Any]) -> dict[str, Any]:
        evse = (payload.get("evse") or {}).get("id", 0)
        return {"status": self.core.set_availability(int(evse), payload["operationalStatus"] == "Operative")}

    @on_raw("UnlockConnector")
    def on_unlock(self, payload: dict[str, Any]) -> dict[str, Any]:
        if int(payload["connectorId"]) != 1:  # F05.FR.03 (TC_F_10_CS): each EVSE here has one connector, id 1
            return {"status": "UnknownConnector"}
        return {"status": self.core.unlock(int(payload["evseId"]))}

    @on_raw("TriggerMessage")
    def on_trigger(self, payload: dict[str, Any]) -> dict[str, Any]:
        message = payload["requestedMessage"]
        evse = (payload.get("evse") or {}).get("id")
        if evse is not None and evse not in self.core.connectors:
            return {"status": "Rejected"}
        if message == "BootNotification":
            return {"status": "Rejected" if self.accepted else "Accepted"}
        if message in ("Heartbeat", "StatusNotification"):
            return {"status": "Accepted"}
        if message == "MeterValues":
            has = any(self.core.current_reading(c) for c in self._targets(evse))
            return {"status": "Accepted" if has else "Rejected"}
        if message in ("FirmwareStatusNotification", "LogStatusNotification"):
            return {"status": "Accepted"}
        if message == "TransactionEvent":
            return {"status": "Accepted" if any(c.transaction for c in self._targets(evse)) else "Rejected"}
        if message == "SignChargingStationCertificate":
            return {"status": self.trigger_certificate_renewal()}
        return {"status": "NotImplemented"}

    @after_raw("TriggerMessage")
    async def after_trigger(self, payload: dict[str, Any]) -> None:
        message = payload["requestedMessage"]
        evse = (payload.get("evse") or {}).get("id")
        if message == "Heartbeat":
            await self.send_heartbeat()
        elif message == "StatusNotification":
            for conn in self._targets(evse):
                await self.send_status(conn, force=True)
        elif message == "FirmwareStatusNotification":
            await self.send_firmware_status(self.client.firmware_note(), triggered=True)
        elif message == "SignChargingStationCertificate" and self.client.renewal.refusal() is None:
            self.client.renewal.start("TriggerMessage")
        elif message == "LogStatusNotification":
            await self.send_log_status(self.client.log_note(), triggered=True)
        elif message == "TransactionEvent":
            # Through the durable outbox like every transaction event: seqNo stays contiguous.
            for conn in self._targets(evse):
                self.core.record_triggered_update(conn.id)
        elif message == "MeterValues":
            for conn in self._targets(evse):
                reading = self.core.current_reading(conn)
                if reading:
                    from station.core.station import meter_json

                    values = sampled_values(meter_json(reading), "Trigger", self.core.selected_measurands("clock"))
                    await self.request("MeterValues", {"evseId": conn.id, "meterValue": [
                        {"timestamp": iso(self.core.clock.now()), "sampledValue": values}]})

    def _targets(self, evse: int | None) -> list[Connector]:
        return [self.core.connectors[evse]] if evse else list(self.core.connectors.values())

    @on_raw("UpdateFirmware")
    async def on_update_firmware(self, payload: dict[str, Any]) -> dict[str, Any]:
        firmware = payload["firmware"]
        if not firmware.get("signingCertificate"):
            # 2.0.1 has no unsigned update here: the signing certificate is what ties it to the manufacturer.
            report_event(self.client, "InvalidFirmwareSigningCertificate", "UpdateFirmware without signing certificate")
            return {"status": "InvalidCertificate", "statusInfo": status_info("signed firmware required")}
        request = FirmwareRequest(
            location=firmware["location"],
            retrieve_at=parse_time(firmware["retrieveDateTime"]) or datetime.now(UTC),
            request_id=int(payload["requestId"]),
            install_at=parse_time(firmware["installDateTime"]) if firmware.get("installDateTime") else None,
            signing_certificate=firmware.get("signingCertificate"),
            signature=firmware.get("signature"),
            retries=payload.get("retries"),
            retry_interval_s=payload.get("retryInterval"),
        )
        status, reason = await self.start_firmware_update(request)
        answer: dict[str, Any] = {"status": status}
        if reason and status not in ("Accepted", "AcceptedCanceled"):
            answer["statusInfo"] = status_info(reason)
        return answer

    @after_raw("UpdateFirmware")
    async def after_update_firmware(self, payload: dict[str, Any]) -> None:
        self.launch_firmware_update()  # a refused certificate was recorded as a security event (durable)

    @on_raw("SetNetworkProfile")
    def on_set_network_profile(self, payload: dict[str, Any]) -> dict[str, Any]:
        """B09: validated and stored; used once NetworkConfigurationPriority names it and the station restarts."""
        endpoints = self.client.endpoints
        if endpoints is None:
            return {"status": "Rejected", "statusInfo": status_info("network profiles not kept by this station")}
        data = payload["connectionData"]
        version = VERSIONS.get(data["ocppVersion"])
        if data["ocppTransport"] != "JSON" or version is None:
            return {"status": "Rejected", "statusInfo": {"reasonCode": "InvalidNetworkConf",
                                                         "additionalInfo": "only OCPP20 or OCPP16 over JSON"}}
        profile = NetworkProfile(int(payload["configurationSlot"]), data["ocppCsmsUrl"], version,
                                 int(data["securityProfile"]), int(data["messageTimeout"]))
        params, credentials = self.client.params, self.client.credentials
        has_password = credentials.has_password() if credentials is not None else bool(params.password)
        has_cert = (credentials.certificate_fields() is not None) if credentials is not None else bool(params.client_cert and params.client_key)
        raise_refusal = (credentials.profile_refusal(profile.security_profile, urls=[profile.url])
                         if credentials is not None else "the security profile is fixed by the station's configuration")
        why = profile_refusal(profile, active_security_profile=self.client.link.profile, has_password=has_password,
                              has_client_cert=has_cert, raise_refusal=raise_refusal)
        if why is not None:
            self.log.warning("ocpp: SetNetworkProfile rejected", slot=profile.slot, reason=why[1])
            return {"status": "Rejected", "statusInfo": {"reasonCode": why[0], "additionalInfo": why[1][:512]}}
        try:
            endpoints.set_profile(profile)
        except OSError as exc:
            self.log.error("ocpp: network profile not saved", error=str(exc))
            return {"status": "Failed", "statusInfo": status_info("could not be saved")}
        self.log.info("ocpp: network profile stored", slot=profile.slot, version=version,
                      security_profile=profile.security_profile)
        return {"status": "Accepted"}

    @on_raw("GetLog")
    async def on_get_log(self, payload: dict[str, Any]) -> dict[str, Any]:
        answer = await self.start_log_upload(log_request(payload))
        result: dict[str, Any] = {"status": answer.status}
        if answer.filename:
            result["filename"] = answer.filename
        if answer.reason and answer.status == "Rejected":
            result["statusInfo"] = status_info(answer.reason)
        return result

    @after_raw("GetLog")
    def after_get_log(self, payload: dict[str, Any]) -> None:
        self.launch_log_upload()

    @on_raw("GetBaseReport")
    def on_get_base_report(self, payload: dict[str, Any]) -> dict[str, Any]:
        return self.reporter.get_base_report(payload)

    @after_raw("GetBaseReport")
    async def after_get_base_report(self, payload: dict[str, Any]) -> None:
        await self.reporter.send()

    @on_raw("GetReport")
    def on_get_report(self, payload: dict[str, Any]) -> dict[str, Any]:
        return self.reporter.get_report(payload, self.call_size)

    @after_raw("GetReport")
    async def after_get_report(self, payload: dict[str, Any]) -> None:
        await self.reporter.send()

    @cached_property
    def reporter(self) -> Reporter:
        """This session's reports (station.ocpp.reports)."""
        return Reporter(self)

    @on_raw("GetVariables")
    def on_get_variables(self, payload: dict[str, Any]) -> dict[str, Any]:
        return variables.get_variables(self.core.device_model, payload, self.call_size)

    @on_raw("SetVariables")
    def on_set_variables(self, payload: dict[str, Any]) -> dict[str, Any]:
        return variables.set_variables(self.core.device_model, payload, self.call_size)

    def _apply_profile(self, evse: int, raw: dict[str, Any], *, replace_same_stack: bool = False) -> str | None:
        """Install a chargingProfile on an EVSE; why not, or None when installed."""
        schedules = raw.get("chargingSchedule") or []
        if len(schedules) != 1:
            return "one chargingSchedule per profile supported (no ISO 15118)"
        profile = charging_profile(evse, raw, schedules[0], profile_id=int(raw["id"]), transaction_id=raw.get("transactionId"))
        if isinstance(profile, str):
            return profile
        if schedules[0].get("id") is not None:  # reported back as given (GetChargingProfiles)
            profile = dataclasses.replace(profile, schedule_id=int(schedules[0]["id"]))
        return self.core.charging.install(profile, replace_same_stack=replace_same_stack)

    @on_raw("SetChargingProfile")
    def on_set_charging_profile(self, payload: dict[str, Any]) -> dict[str, Any]:
        evse = int(payload["evseId"])
        profile = payload["chargingProfile"]
        if evse != 0 and evse not in self.core.connectors:
            return {"status": "Rejected", "statusInfo": status_info("unknown evse")}
        if profile["chargingProfilePurpose"] == "TxProfile" and not (evse and self.core.connectors[evse].transaction):
            return {"status": "Rejected", "statusInfo": status_info("no transaction")}  # K01.FR.09
        reason = self._apply_profile(evse, profile)
        if reason:
            return {"status": "Rejected", "statusInfo": status_info(reason)}
        return {"status": "Accepted"}

    @on_raw("ClearChargingProfile")
    def on_clear_charging_profile(self, payload: dict[str, Any]) -> dict[str, Any]:
        criteria = payload.get("chargingProfileCriteria") or {}
        purpose = profile_purpose(criteria["chargingProfilePurpose"]) if "chargingProfilePurpose" in criteria else None
        if "chargingProfilePurpose" in criteria and purpose is None and "chargingProfileId" not in payload:
            return {"status": "Unknown"}  # e.g. ChargingStationExternalConstraints: never installed here
        cleared = self.core.charging.clear(
            profile_id=payload.get("chargingProfileId"), connector_id=criteria.get("evseId"),
            purpose=purpose, stack_level=criteria.get("stackLevel"))
        return {"status": "Accepted" if cleared else "Unknown"}

    @on_raw("GetCompositeSchedule")
    def on_get_composite_schedule(self, payload: dict[str, Any]) -> dict[str, Any]:
        evse = int(payload["evseId"])
        if evse != 0 and evse not in self.core.connectors:
            return {"status": "Rejected", "statusInfo": status_info("unknown evse")}
        unit = payload.get("chargingRateUnit", "A")
        start, periods = composite_periods(self.core, evse, int(payload["duration"]), unit)
        return {"status": "Accepted", "schedule": {
            "evseId": evse, "duration": int(payload["duration"]), "scheduleStart": iso(start),
            "chargingRateUnit": unit, "chargingSchedulePeriod": periods,
        }}

    @on_raw("SendLocalList")
    def on_send_local_list(self, payload: dict[str, Any]) -> dict[str, Any]:
        entries: dict[str, tuple[str, str | None] | None] = {}
        for item in payload.get("localAuthorizationList") or []:
            info = item.get("idTokenInfo")
            entries[item["idToken"]["idToken"]] = (info["status"], info.get("cacheExpiryDateTime"),
                                                   (info.get("groupIdToken") or {}).get("idToken")) if info else None
        return {"status": self.update_local_list(int(payload["versionNumber"]), payload["updateType"] == "Full", entries)}

    @on_raw("GetLocalListVersion")
    def on_get_local_list_version(self, payload: dict[str, Any]) -> dict[str, Any]:
        return {"versionNumber": self.core.store.local_list_version()}
