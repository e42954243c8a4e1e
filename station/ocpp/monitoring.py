"""OCPP 2.0.1 monitoring messages over `station.core.monitoring` (block N: N02-N08).

Translation only: the monitors, their evaluation and the offline/level rules live in the core
engine. Here: the request and answer shapes of SetVariableMonitoring, ClearVariableMonitoring,
GetMonitoringReport (+ NotifyMonitoringReport pages), SetMonitoringBase, SetMonitoringLevel, and
the NotifyEvent built from the durable outbox. OCPP 1.6 has no monitoring: its sessions drop
queued events (the 1.6 CSMS learns hardware problems from StatusNotification's errorCode).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from station.core.monitoring import MESSAGE_KIND, Monitor, MonitorEvent, Monitoring, VariableRef
from station.ocpp.outbox_kinds import register
from station.ocpp.reason_codes import fit
from station.ocpp.reports import paginate
from station.ocpp.rpc import CallErrorReceived, after_raw, on_raw
from station.ocpp.variables import check_limits

if TYPE_CHECKING:
    from station.core.store import OutboxEntry
    from station.ocpp.base import BaseSession

TECH_CODE_MAX, TECH_INFO_MAX, ACTUAL_VALUE_MAX = 50, 500, 2500


def variable_ref(component: dict[str, Any], variable: dict[str, Any] | None) -> VariableRef:
    """A request's component/variable as the engine names it (variable "" = every variable)."""
    evse = component.get("evse") or {}
    variable = variable or {}
    return VariableRef(component["name"], variable.get("name", ""), evse.get("id"), evse.get("connectorId"),
                       component.get("instance"), variable.get("instance"))


def component_json(ref: VariableRef) -> dict[str, Any]:
    out: dict[str, Any] = {"name": ref.component}
    if ref.component_instance:
        out["instance"] = ref.component_instance
    if ref.evse is not None:
        out["evse"] = {"id": ref.evse}
        if ref.connector is not None:
            out["evse"]["connectorId"] = ref.connector
    return out


def variable_json(ref: VariableRef) -> dict[str, Any]:
    out: dict[str, Any] = {"name": ref.variable}
    if ref.variable_instance:
        out["instance"] = ref.variable_instance
    return out


def set_variable_monitoring(engine: Monitoring, items: list[dict[str, Any]]) -> dict[str, Any]:
    results = []
    for item in items:
        ref = variable_ref(item["component"], item["variable"])
        outcome = engine.set_monitor(ref, item["type"], float(item["value"]), int(item["severity"]),
                                     monitor_id=item.get("id"), transaction=bool(item.get("transaction", False)))
        result: dict[str, Any] = {"status": outcome.status, "type": item["type"], "severity": item["severity"],
                                  "component": item["component"], "variable": item["variable"]}
        if outcome.monitor_id is not None and outcome.status == "Accepted":
            result["id"] = outcome.monitor_id
        elif item.get("id") is not None:
            result["id"] = item["id"]
        if outcome.reason:
            result["statusInfo"] = {"reasonCode": fit(outcome.status), "additionalInfo": outcome.reason[:512]}
        results.append(result)
    return {"setMonitoringResult": results}


def monitoring_report_data(monitors: list[Monitor]) -> list[dict[str, Any]]:
    """NotifyMonitoringReport `monitor` entries: one per variable, its monitors listed in it."""
    by_ref: dict[VariableRef, list[dict[str, Any]]] = {}
    for monitor in monitors:
        by_ref.setdefault(monitor.ref, []).append({
            "id": monitor.id, "transaction": monitor.transaction, "value": monitor.value,
            "type": monitor.type.value, "severity": monitor.severity})
    return [{"component": component_json(ref), "variable": variable_json(ref), "variableMonitoring": found}
            for ref, found in by_ref.items()]


def event_data(event: MonitorEvent, timestamp: str) -> dict[str, Any]:
    data: dict[str, Any] = {
        "eventId": event.event_id, "timestamp": timestamp, "trigger": event.trigger,
        "actualValue": event.actual_value[:ACTUAL_VALUE_MAX], "eventNotificationType": event.notification_type,
        "component": component_json(event.ref), "variable": variable_json(event.ref),
    }
    if event.cleared:
        data["cleared"] = True
    if event.monitor_id is not None:
        data["variableMonitoringId"] = event.monitor_id
    if event.tech_code:
        data["techCode"] = event.tech_code[:TECH_CODE_MAX]
    if event.tech_info:
        data["techInfo"] = event.tech_info[:TECH_INFO_MAX]
    if event.transaction_id:
        data["transactionId"] = event.transaction_id[:36]
    return data


@register(MESSAGE_KIND)
def notify_event(session: BaseSession, entry: OutboxEntry) -> tuple[str, dict[str, Any]] | None:
    """NotifyEvent for a queued monitoring event; None on 1.6 (no such message: dropped as delivered)."""
    if session.VERSION != "201":
        return None
    event = MonitorEvent.from_json(entry.data)
    return "NotifyEvent", {"generatedAt": session.event_time(entry), "seqNo": 0,
                           "eventData": [event_data(event, session.event_time(entry))]}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class MonitoringHandlers:
    """The 2.0.1 session's monitoring handlers (mixed into `V201Session`)."""

    core: Any
    log: Any
    _monitoring_pages: tuple[int, list[list[dict[str, Any]]]] | None = None

    @property
    def _engine(self) -> Monitoring:
        return self.core.monitoring.engine

    @on_raw("SetVariableMonitoring")
    def on_set_variable_monitoring(self, payload: dict[str, Any]) -> dict[str, Any]:
        items = payload["setMonitoringData"]
        check_limits(self.core.device_model, "SetVariableMonitoring", len(items), None)
        return set_variable_monitoring(self._engine, items)

    @on_raw("ClearVariableMonitoring")
    def on_clear_variable_monitoring(self, payload: dict[str, Any]) -> dict[str, Any]:
        ids = payload["id"]
        check_limits(self.core.device_model, "ClearVariableMonitoring", len(ids), None)
        return {"clearMonitoringResult": [{"status": self._engine.clear(int(i)), "id": i} for i in ids]}

    @on_raw("SetMonitoringBase")
    def on_set_monitoring_base(self, payload: dict[str, Any]) -> dict[str, Any]:
        return {"status": self._engine.set_base(payload["monitoringBase"])}

    @on_raw("SetMonitoringLevel")
    def on_set_monitoring_level(self, payload: dict[str, Any]) -> dict[str, Any]:
        return {"status": self._engine.set_level(int(payload["severity"]))}

    @on_raw("GetMonitoringReport")
    def on_get_monitoring_report(self, payload: dict[str, Any]) -> dict[str, Any]:
        refs = [variable_ref(cv["component"], cv.get("variable")) for cv in payload.get("componentVariable") or []]
        try:
            found = self._engine.report(payload.get("monitoringCriteria") or [], refs)
        except ValueError:
            return {"status": "NotSupported"}  # N02.FR.02
        if not found:
            return {"status": "EmptyResultSet"}  # N02.FR.10
        model = self.core.device_model
        pages = paginate(monitoring_report_data(found),
                         max(1, int(model.value("DeviceDataCtrlr", "ItemsPerMessage", instance="GetReport"))),
                         int(model.value("DeviceDataCtrlr", "BytesPerMessage", instance="GetReport")))
        self._monitoring_pages = (int(payload["requestId"]), pages)
        return {"status": "Accepted"}

    @after_raw("GetMonitoringReport")
    async def after_get_monitoring_report(self, payload: dict[str, Any]) -> None:
        """The NotifyMonitoringReport pages of the request just accepted (N02.FR.03/04/09)."""
        prepared, self._monitoring_pages = self._monitoring_pages, None
        if prepared is None:
            return
        request_id, pages = prepared
        generated = _now()
        for seq_no, page in enumerate(pages):
            message: dict[str, Any] = {"requestId": request_id, "seqNo": seq_no, "generatedAt": generated,
                                       "monitor": page}
            if seq_no < len(pages) - 1:
                message["tbc"] = True
            try:
                await self.request("NotifyMonitoringReport", message)  # type: ignore[attr-defined]
            except (CallErrorReceived, TimeoutError) as exc:
                self.log.warning("ocpp: NotifyMonitoringReport not confirmed; report abandoned",
                                 request_id=request_id, seq_no=seq_no, error=str(exc))
                return
