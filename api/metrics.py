"""Prometheus exposition of the station, built per scrape from one daemon status read.

A fresh registry per scrape keeps the figures consistent with that one status and
avoids global metric state (several apps can live in one test process).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from api.daemon_link import DaemonLink

CONNECTOR_STATUSES = ("Available", "Preparing", "Charging", "SuspendedEV", "SuspendedEVSE", "Finishing",
                      "Reserved", "Unavailable", "Faulted")


class StationCollector(Collector):
    def __init__(self, link: DaemonLink, status: dict[str, Any] | None) -> None:
        self.link = link
        self.status = status

    def collect(self) -> Iterator[Metric]:
        link, status = self.link, self.status
        yield _gauge("station_daemon_up", "1 when the API reaches the daemon's IPC socket.", status is not None)
        messages = CounterMetricFamily("station_ocpp_messages", "OCPP frames seen on the daemon's event stream "
                                       "since the API started.", labels=["action", "direction"])
        for (action, direction), count in sorted(link.messages.items()):
            messages.add_metric([action, direction], count)
        yield messages
        yield CounterMetricFamily("station_api_event_resubscriptions", "Times the API re-subscribed to the "
                                  "daemon's events.", value=link.resubscriptions)
        yield CounterMetricFamily("station_api_events_dropped", "Events the daemon dropped for the API (slow reader).",
                                  value=link.events_dropped)
        if status is None:
            return
        ocpp = status.get("ocpp") or {}
        yield _gauge("station_csms_connected", "1 while the CSMS WebSocket is open.",
                     ocpp.get("connected", status.get("csms_online")))
        yield CounterMetricFamily("station_csms_reconnects", "Reconnections to the CSMS since the daemon started.",
                                  value=float(ocpp.get("reconnects") or 0))
        yield _gauge("station_offline_queue_depth", "Transaction messages waiting for the CSMS.",
                     status.get("outbox_depth"))
        yield _gauge("station_outbox_parked", "Transaction messages parked after being refused (sent again "
                     "only when an operator releases them).", ocpp.get("parked_messages"))
        yield _gauge("station_outbox_held", "Queued transaction messages waiting for the OCPP version their "
                     "transaction started in.", ocpp.get("held_messages"))
        yield _gauge("station_clock_trusted", "1 when the wall clock is synchronized.",
                     (status.get("clock") or {}).get("trusted"))
        yield _gauge("station_uptime_seconds", "Daemon uptime.", status.get("uptime_s"))
        yield _gauge("station_daemon_resident_memory_bytes", "Resident memory of the daemon process.",
                     (status.get("process") or {}).get("rss_bytes"))

        meter = status.get("meter")
        if meter:
            health = status.get("meter_health") or {}
            yield _gauge("station_meter_up", "1 while the energy meter answers (0 after failed polls in a row).",
                         health.get("healthy", meter.get("healthy")))
            stats = meter.get("stats") or {}
            yield CounterMetricFamily("station_meter_polls_failed", "Meter polls that gave no valid reading.",
                                      value=float(stats.get("polls_failed") or 0))
        link_up = GaugeMetricFamily("station_esp32_link_up", "1 while the ESP32 link answers.", labels=["connector"])
        rejected = CounterMetricFamily("station_serial_frame_errors", "Frames from the ESP32 rejected by the "
                                       "strict parser.", labels=["connector"])
        discarded = CounterMetricFamily("station_serial_bytes_discarded", "Bytes skipped while resynchronizing "
                                        "on the ESP32 link.", labels=["connector"])
        for cid, esp in sorted((status.get("esp32") or {}).items()):
            stats = (esp or {}).get("stats") or {}
            link_up.add_metric([str(cid)], float(bool(esp.get("link_up"))))
            rejected.add_metric([str(cid)], float(stats.get("frames_rejected") or 0))
            discarded.add_metric([str(cid)], float(stats.get("bytes_discarded") or 0))
        state = GaugeMetricFamily("station_connector_status", "1 for the connector's current OCPP status.",
                                  labels=["connector", "status"])
        energy = GaugeMetricFamily("station_session_energy_wh", "Energy of the ongoing session (0 when none).",
                                   labels=["connector"])
        power = GaugeMetricFamily("station_power_w", "Active power from the meter.", labels=["connector"])
        for conn in status.get("connectors") or []:
            cid = str(conn.get("id"))
            for name in CONNECTOR_STATUSES:
                state.add_metric([cid, name], float(conn.get("status") == name))
            energy.add_metric([cid], session_energy_wh(conn))
            meter = conn.get("meter") or {}
            if meter.get("power_w") is not None:
                power.add_metric([cid], float(meter["power_w"]))
        if not status.get("esp32"):
            for conn in status.get("connectors") or []:
                link_up.add_metric([str(conn.get("id"))], float(bool((conn.get("controller_link") or {}).get("up"))))
        yield from (link_up, rejected, discarded, state, energy, power)


def session_energy_wh(conn: dict[str, Any]) -> float:
    tx = conn.get("transaction") or {}
    start = tx.get("meter_start_wh")
    now = (conn.get("meter") or {}).get("energy_wh")
    if not tx or start is None or now is None:
        return 0.0
    return max(0.0, float(now) - float(start))


def _gauge(name: str, documentation: str, value: Any) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=float(value) if value is not None else float("nan"))


def render(link: DaemonLink, status: dict[str, Any] | None) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StationCollector(link, status))
    ProcessCollector(registry=registry)  # the API process's own memory and CPU
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return generate_latest(registry)
