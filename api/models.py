"""Request and response models of the local API (they are the OpenAPI schema at /docs).

Response models name the fields clients rely on and allow extra ones, so that the
daemon can report more without breaking the API.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ErrorBody(BaseModel):
    detail: str = Field(description="What went wrong, in words a technician can act on.")


# --- health --------------------------------------------------------------------------
class DaemonReachability(BaseModel):
    reachable: bool
    socket: str
    error: str | None = Field(None, description="Why the daemon cannot be reached, when it cannot.")
    since: str = Field(description="When reachability last changed (UTC).")


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    api_version: str
    daemon: DaemonReachability


class Check(BaseModel):
    ok: bool
    detail: str


class Ready(BaseModel):
    ready: bool = Field(description="All checks pass.")
    daemon: Check
    esp32: Check
    csms: Check
    store: Check | None = Field(default=None, description="State database writable (disk not full or read-only).")
    meter: Check | None = Field(default=None, description="Energy meter answering (billing depends on it); "
                                "absent when no meter is configured.")


# --- state ---------------------------------------------------------------------------
class ControllerLink(Open):
    up: bool
    reason: str | None = None
    firmware: str | None = None


class MeterSample(Open):
    energy_wh: float | None = None
    power_w: float | None = None
    current_a: list[float] | None = None
    voltage_v: list[float] | None = None
    frequency_hz: float | None = None


class Transaction(Open):
    id: str
    connector_id: int
    id_token: str | None = Field(None, description="Masked: only the last 4 characters are shown.")
    token_type: str | None = None
    started_at: str
    ended_at: str | None = None
    meter_start_wh: float | None = None
    meter_stop_wh: float | None = None
    energy_wh: float | None = None
    stop_reason: str | None = None
    charging_state: str | None = None
    csms_id: str | None = None


class Reservation(Open):
    id: int = Field(description="The CSMS's reservation id.")
    connector_id: int | None = Field(description="The reserved connector; null: any connector of the station.")
    id_token: str = Field(description="Masked: only the last 4 characters are shown.")
    token_type: str
    group_id: str | None = Field(None, description="Tokens of this group may use the reservation too.")
    expires_at: str = Field(description="When the reservation ends unless used (UTC).")
    connector_type: str | None = None


class Connector(Open):
    id: int
    status: str = Field(description="OCPP connector status (Available, Preparing, Charging, ... Faulted).")
    error_code: str | None = None
    info: str | None = None
    charging_state: str | None = None
    operative: bool
    inoperative_scheduled: bool = False
    controller_link: ControllerLink
    pilot: str | None = Field(None, description="IEC 61851 control pilot state A-F.")
    controller_state: str | None = None
    relay_closed: bool | None = None
    controller_authorized: bool | None = None
    offered_current_a: int | None = None
    limit_a: float
    limits: dict[str, float] = Field(default_factory=dict, description="Current limits by source; the lowest wins.")
    transaction: Transaction | None = None
    pending_authorization: bool = False
    meter: MeterSample | None = None
    last_command_error: str | None = None
    reservation: Reservation | None = Field(None, description="The reservation this connector shows (status Reserved).")


class OcppLink(Open):
    connected: bool = False
    version: str | None = Field(None, description="OCPP version in use: 201 (2.0.1) or 16 (1.6J).")
    url: str | None = Field(None, description="CSMS URL, without credentials.")
    last_error: str | None = None
    reconnects: int | None = None
    last_sent_at: str | None = None
    last_received_at: str | None = None
    parked_messages: int | None = Field(None, description="Transaction messages the CSMS refused too often: kept, "
                                        "not sent until released (GET /outbox/parked).")
    held_messages: int | None = Field(None, description="Queued messages of transactions bound to the other OCPP "
                                      "version: sent once the station is back on it.")


class Clock(Open):
    trusted: bool
    source: str | None = None
    now: str


class Problem(BaseModel):
    code: Literal["csms_unreachable", "clock_not_synced", "store_unhealthy", "esp32_link_down",
                  "connector_faulted", "undervoltage", "meter_unhealthy",
                  "esp32_unexpected_values", "outbox_parked", "outbox_held"]
    severity: Literal["error", "warning"]
    message: str = Field(description="What, where, since when and the first check, in one line.")
    what: str | None = Field(None, description="What is wrong, in the station's terms.")
    where: str | None = Field(None, description="Port, Modbus address or URL (never credentials).")
    since: str | None = Field(None, description="UTC time of day it started (or was first seen by the API).")
    check: str | None = Field(None, description="The first thing a technician should check.")


class Status(Open):
    station_id: str | None = None
    software_version: str | None = None
    uptime_s: float | None = None
    ocpp: OcppLink | None = None
    esp32: dict[str, Any] | None = Field(None, description="ESP32 link per connector: link_up, firmware, stats.")
    meter: dict[str, Any] | None = None
    connectors: list[Connector]
    outbox_depth: int = Field(description="Offline queue: transaction messages not yet confirmed by the CSMS.")
    csms_online: bool
    clock: Clock
    store: dict[str, Any] = Field(default_factory=dict)
    reservations: list[Reservation] = Field(default_factory=list, description="Reservations held (ReserveNow).")
    problems: list[Problem] = Field(default_factory=list)


class DeviceVariable(BaseModel):
    """One device-model variable (OCPP 2.0.1 names) with its values; secrets are `***`."""

    component: dict[str, Any] = Field(description="name, instance, evse {id, connectorId} as in OCPP 2.0.1.")
    variable: dict[str, Any] = Field(description="name and instance.")
    attributes: list[dict[str, Any]] = Field(description="type (Actual, MaxSet...), value, mutability, persistent.")
    characteristics: dict[str, Any] = Field(description="dataType, unit, minLimit, maxLimit, valuesList, supportsMonitoring.")
    key16: str | None = Field(None, description="The OCPP 1.6 configuration key mapped onto this variable.")
    only16: bool = Field(False, description="A 1.6 key with no 2.0.1 variable.")
    reboot_required: bool = False


class TransactionPage(BaseModel):
    items: list[Transaction]
    total: int
    limit: int
    offset: int


# --- control -------------------------------------------------------------------------
TokenType = Literal["Local", "Central", "ISO14443", "ISO15693", "KeyCode", "eMAID", "MacAddress", "NoAuthorization"]


class StartRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # JSON types only: "no" or 0 is not false
    id_token: str = Field(min_length=1, max_length=20, pattern=r"^[\x21-\x7e]+$",
                          description="Token the session is recorded under (OCPP 1.6 idTag rules: 1-20 printable "
                                      "ASCII characters, no spaces).", examples=["TECH-0001"])
    token_type: TokenType = "Local"


class StartResult(BaseModel):
    accepted: bool
    connector_id: int | None
    transaction_id: str | None = None
    detail: str
    authorization: dict[str, Any] | None = Field(
        None, description="How the token was authorized: status and source (csms, local_list, cache, offline_unknown, "
                          "not_required).")


class StopResult(BaseModel):
    stopped: bool
    connector_id: int | None = None
    transaction_id: str | None = None


class AvailabilityRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # JSON types only: "no" or 0 is not false
    operative: bool = Field(description="false takes the connector out of service (after the ongoing session).")


class AvailabilityResult(BaseModel):
    status: Literal["Accepted", "Scheduled"]
    connector_id: int
    operative: bool


class UnlockResult(BaseModel):
    status: str
    connector_id: int


class LimitRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # JSON types only: "no" or 0 is not false
    amps: float | None = Field(description="Local current limit in A: 0 suspends charging, 6..32 limits it, "
                                           "null clears the local limit.", examples=[16])

    @model_validator(mode="after")
    def _signalable(self) -> LimitRequest:
        a = self.amps
        if a is not None and a != 0 and not 6 <= a <= 32:
            raise ValueError("amps must be 0 (suspend), 6..32, or null (clear): "
                             "6 A is the lowest current IEC 61851 can signal")
        return self


class LimitResult(BaseModel):
    connector_id: int
    local_limit_a: float | None
    effective_limit_a: dict[str, float]


class ParkedEntry(BaseModel):
    id: int
    transaction_id: str
    connector_id: int
    kind: str = Field(description="started | updated | ended")
    seq_no: int
    trigger: str
    recorded_at: str
    attempts: int
    parked: bool
    last_error: str | None = None


class Outbox(BaseModel):
    depth: int = Field(description="Messages queued for the CSMS (parked ones not counted).")
    parked: list[ParkedEntry]
    unfinished_by_version: dict[str, int] = Field(
        description="Per OCPP version (201, 16): open transactions and queued messages bound to it.")


class ReleaseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # JSON types only: "no" or 0 is not false
    ids: list[int] | None = Field(None, max_length=1000, description="Entries to release; omitted or null: all.")


class ReleaseResult(BaseModel):
    released: list[int]
