"""OCPP 2.0.1 reports (B07 GetBaseReport, B08 GetReport): the device model sent as NotifyReport pages.

The request is answered first (Accepted / EmptyResultSet / Rejected), then the report follows,
one NotifyReport after the other (each waits for its answer), with the same `requestId`,
`seqNo` from 0 and `tbc` true on every page but the last. Values are taken when the request
arrives, so the pages describe one moment. Page size: at most
DeviceDataCtrlr.ItemsPerMessage[GetReport] entries and BytesPerMessage[GetReport] bytes of
payload (an entry larger than that alone goes alone).

What the spec asks, as implemented:
- ConfigurationInventory: the attributes the operator can set (ReadWrite, WriteOnly); FullInventory:
  every attribute; SummaryInventory: the AvailabilityState of the station, EVSEs and connectors and
  every Problem / Tripped / Overload / Fallback variable that is true (B07). All three are
  supported, so GetBaseReport never answers NotSupported.
- A WriteOnly attribute is reported without its value (B07.FR.03).
- GetReport: componentCriteria are ORed; a component without a variable of the criterion's name
  counts as Active / Available / Enabled and not as Problem. A componentVariable without `evse`
  matches the component on every EVSE, without `variable` every variable of the component
  (B08.FR.20), without a variable `instance` every instance (B08.FR.21). Nothing matching:
  EmptyResultSet and no NotifyReport (B08.FR.15). Every criterion of the schema is supported,
  so GetReport never answers NotSupported.
- More componentVariable entries than ItemsPerMessage[GetReport]: CALLERROR
  OccurrenceConstraintViolation (B08.FR.17); a longer request than BytesPerMessage[GetReport]:
  CALLERROR FormatViolation (B08.FR.18).
- One report at a time: a request while one is being sent is answered Rejected (B07.FR.13 / B08.FR.16).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog

from station.core.device_model import AttributeType, DeviceModel, Entry, Mutability, Status
from station.ocpp.rpc import CallErrorReceived
from station.ocpp.variables import check_limits, value_size

if TYPE_CHECKING:
    from station.ocpp.base import BaseSession

log = structlog.get_logger("station.ocpp")

MAX_VALUES_LIST = 1000
SUMMARY_FLAGS = ("problem", "tripped", "overload", "fallback")
CRITERION_DEFAULT = {"Active": True, "Available": True, "Enabled": True, "Problem": False}


# ------------------------------------------------------------------------- selection
def base_entries(model: DeviceModel, base: str) -> list[tuple[Entry, list[AttributeType]]]:
    """(entry, attributes to report) for a reportBase."""
    out = []
    for entry in model.entries():
        specs = entry.variable.attributes()
        if base == "FullInventory":
            chosen = [s.type for s in specs]
        elif base == "ConfigurationInventory":
            chosen = [s.type for s in specs if entry.mutability(s) != Mutability.READ_ONLY]
        else:  # SummaryInventory
            chosen = [AttributeType.ACTUAL] if _in_summary(model, entry) else []
        if chosen:
            out.append((entry, chosen))
    return out


def _in_summary(model: DeviceModel, entry: Entry) -> bool:
    name = entry.variable.name.lower()
    if name == "availabilitystate" and entry.component in ("ChargingStation", "EVSE", "Connector"):
        return True
    return name in SUMMARY_FLAGS and model.read(entry).value == "true"


def _criteria_match(model: DeviceModel, component: list[Entry], criteria: list[str]) -> bool:
    for criterion in criteria:
        flag = next((e for e in component if e.variable.name == criterion and e.variable.instance is None), None)
        if flag is None:
            if CRITERION_DEFAULT.get(criterion, False):
                return True
        elif model.read(flag).value == "true":
            return True
    return False


def _matches(entry: Entry, wanted: dict[str, Any]) -> bool:
    component, variable = wanted["component"], wanted.get("variable")
    v = entry.variable
    if component["name"].lower() != v.component.lower():
        return False
    if component.get("instance") is not None and (v.component_instance or "").lower() != component["instance"].lower():
        return False
    evse = component.get("evse")
    if evse is not None:
        if entry.evse != evse["id"] or ("connectorId" in evse and entry.connector != evse["connectorId"]):
            return False
    if variable is None:
        return True
    if variable["name"].lower() != v.name.lower():
        return False
    return variable.get("instance") is None or (v.instance or "").lower() == variable["instance"].lower()


def custom_entries(model: DeviceModel, criteria: list[str] | None,
                   wanted: list[dict[str, Any]] | None) -> list[tuple[Entry, list[AttributeType]]]:
    by_component: dict[tuple[Any, ...], list[Entry]] = {}
    for entry in model.entries():
        v = entry.variable
        by_component.setdefault((v.component, v.component_instance, entry.evse, entry.connector), []).append(entry)
    out = []
    for component in by_component.values():
        if criteria and not _criteria_match(model, component, criteria):
            continue
        for entry in component:
            if wanted and not any(_matches(entry, w) for w in wanted):
                continue
            out.append((entry, [s.type for s in entry.variable.attributes()]))
    return out


# --------------------------------------------------------------------------- shapes
def report_data(model: DeviceModel, entry: Entry, attributes: Iterable[AttributeType], size: int = 2500) -> dict[str, Any]:
    """One ReportDataType: component, variable, its attributes (value now, cut to `size`) and characteristics."""
    rows = []
    for kind in attributes:
        spec = entry.attribute(kind)
        assert spec is not None
        mutability = entry.mutability(spec)
        constant = spec.mutability == Mutability.READ_ONLY and kind not in entry.getters and not entry.variable.owner_stores
        row: dict[str, Any] = {"type": kind.value, "mutability": mutability.value,
                               "persistent": entry.variable.writable or constant, "constant": constant}
        if mutability != Mutability.WRITE_ONLY and not entry.variable.secret:
            read = model.read(entry, kind)
            if read.status == Status.ACCEPTED and read.value is not None:
                row["value"] = read.value[:size]
        rows.append(row)
    characteristics = entry.characteristics_json()
    if "valuesList" in characteristics:
        characteristics["valuesList"] = characteristics["valuesList"][:MAX_VALUES_LIST]
    return {"component": entry.component_json(), "variable": entry.variable_json(),
            "variableAttribute": rows, "variableCharacteristics": characteristics}


def paginate(items: list[dict[str, Any]], max_items: int, max_bytes: int) -> list[list[dict[str, Any]]]:
    """Pages of at most `max_items` entries whose JSON stays within `max_bytes` (with the envelope)."""
    envelope = 160  # requestId, generatedAt, seqNo, tbc and the brackets around reportData
    pages: list[list[dict[str, Any]]] = []
    page: list[dict[str, Any]] = []
    size = envelope
    for item in items:
        length = len(json.dumps(item, separators=(",", ":"))) + 1
        if page and (len(page) >= max_items or size + length > max_bytes):
            pages.append(page)
            page, size = [], envelope
        page.append(item)
        size += length
    if page:
        pages.append(page)
    return pages


# ---------------------------------------------------------------------------- sending
class Reporter:
    """The reports of one 2.0.1 session: answers the request, then sends the pages it prepared."""

    def __init__(self, session: BaseSession) -> None:
        self.session = session
        self.model: DeviceModel = session.core.device_model
        self._prepared: tuple[int, list[list[dict[str, Any]]]] | None = None
        self.sending = False

    def get_base_report(self, payload: dict[str, Any]) -> dict[str, Any]:
        if self.sending:
            return {"status": "Rejected", "statusInfo": {"reasonCode": "Busy", "additionalInfo": "a report is being sent"}}
        chosen = base_entries(self.model, payload["reportBase"])
        return self._prepare(int(payload["requestId"]), chosen)

    def get_report(self, payload: dict[str, Any], size: int | None) -> dict[str, Any]:
        wanted = payload.get("componentVariable") or None
        if wanted:
            check_limits(self.model, "GetReport", len(wanted), size)
        elif size is not None:
            check_limits(self.model, "GetReport", 0, size)
        if self.sending:
            return {"status": "Rejected", "statusInfo": {"reasonCode": "Busy", "additionalInfo": "a report is being sent"}}
        chosen = custom_entries(self.model, payload.get("componentCriteria") or None, wanted)
        return self._prepare(int(payload["requestId"]), chosen)

    def _prepare(self, request_id: int, chosen: list[tuple[Entry, list[AttributeType]]]) -> dict[str, Any]:
        if not chosen:
            return {"status": "EmptyResultSet"}
        size = value_size(self.model)
        items = [report_data(self.model, entry, attributes, size) for entry, attributes in chosen]
        max_items = int(self.model.value("DeviceDataCtrlr", "ItemsPerMessage", instance="GetReport"))
        max_bytes = int(self.model.value("DeviceDataCtrlr", "BytesPerMessage", instance="GetReport"))
        self._prepared = (request_id, paginate(items, max(1, max_items), max_bytes))
        self.sending = True
        return {"status": "Accepted"}

    async def send(self) -> None:
        """The NotifyReport pages of the request just accepted (after its answer went out)."""
        prepared, self._prepared = self._prepared, None
        if prepared is None:
            return
        request_id, pages = prepared
        generated = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        try:
            for seq_no, page in enumerate(pages):
                last = seq_no == len(pages) - 1
                payload = {"requestId": request_id, "generatedAt": generated, "seqNo": seq_no,
                           "tbc": not last, "reportData": page}
                if last:  # a request that follows the last page's arrival is taken (CALLs go out one by one)
                    self.sending = False
                try:
                    await self.session.request("NotifyReport", payload)
                except (CallErrorReceived, TimeoutError) as exc:
                    log.warning("ocpp: NotifyReport not confirmed; report abandoned", request_id=request_id,
                                seq_no=seq_no, error=str(exc))
                    return
            log.info("ocpp: report sent", request_id=request_id, pages=len(pages),
                     entries=sum(len(p) for p in pages))
        finally:
            self.sending = False
