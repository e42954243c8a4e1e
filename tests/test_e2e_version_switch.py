"""A version switch in the middle of a transaction loses nothing: the real daemon, the ESP32 and
meter simulators and the dev CSMS; the station is killed with SIGKILL while messages wait.

Rule under test (docs/ocpp.md, "Version switches"): a transaction belongs to the OCPP version its
Started went out in; while the link runs the other version its messages wait (visible in
`status`), and the station returns to the transaction's version to deliver them.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from station.controller.simulator import SimulatorProcess
from station.devtools.csms import DevCsms, Received
from station.ipc.client import IpcClient
from station.meter.sim_process import MeterSimProcess
from tests.e2e import STATION_ID, DaemonProcess, station_env

ONLY_201 = ("ocpp2.0.1",)
ONLY_16 = ("ocpp1.6",)
BOTH = ("ocpp2.0.1", "ocpp1.6")
V16_TRANSACTION = {"StartTransaction", "StopTransaction"}


class Station:
    def __init__(self, directory: Path, csms: DevCsms, env: dict[str, str]) -> None:
        self.dir, self.csms, self.env = directory, csms, env
        self.daemon: DaemonProcess | None = None

    async def start(self) -> None:
        self.daemon = await DaemonProcess(self.env, self.dir / "station.log").start()
        await self.daemon.wait_ipc(20)

    async def kill(self) -> None:
        assert self.daemon is not None
        await self.daemon.stop(signal.SIGKILL)
        self.daemon = None

    async def status(self) -> dict[str, Any]:
        async with IpcClient(self.env["STATION_IPC_SOCKET"], timeout=5) as ipc:
            return await ipc.status()

    async def until(self, condition: Any, timeout: float = 30) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                try:
                    status = await self.status()
                except Exception:  # noqa: BLE001 — daemon still starting
                    status = None
                if status is not None and condition(status):
                    return status
                await asyncio.sleep(0.1)

    async def switch_to(self, subprotocols: tuple[str, ...], version: str) -> None:
        """The CSMS accepts only `subprotocols` from now on; drop the link; wait for `version`."""
        self.csms.accept_subprotocols = subprotocols
        await self.csms.disconnect(STATION_ID)
        await self.csms.wait_connected(STATION_ID, timeout=30)
        assert self.csms.version_of(STATION_ID) == version


@asynccontextmanager
async def station(tmp_path: Path, accept: tuple[str, ...]) -> AsyncIterator[tuple[DevCsms, SimulatorProcess, Station]]:
    async with (
        DevCsms(heartbeat_interval=30, accept_subprotocols=accept) as csms,
        MeterSimProcess(tmp_path, speedup=200, energy_wh=500_000) as meter,
        SimulatorProcess(tmp_path, interval=1, extra_args=["--meter-control", str(meter.control)]) as esp,
    ):
        env = station_env(tmp_path, csms, esp.port, OCPP_PRIMARY="201", STATION_METER_PORT=str(meter.link),
                          STATION_METER_POLL_SECONDS="0.2", STATION_METER_VALUE_SECONDS="1",
                          STATION_VERSION_RETURN_SECONDS="1", STATION_FALLBACK_AFTER="1")
        rig = Station(tmp_path, csms, env)
        await rig.start()
        try:
            yield csms, esp, rig
        finally:
            if rig.daemon is not None:
                await rig.daemon.stop()


def unfinished(status: dict[str, Any], version: str) -> int:
    return int((status["ocpp"].get("unfinished_by_version") or {}).get(version, 0))


def energy(payload: dict[str, Any]) -> list[float]:
    return [float(s["value"]) for mv in payload.get("meterValue") or payload.get("transactionData") or []
            for s in mv["sampledValue"] if s.get("measurand") == "Energy.Active.Import.Register"]


def events_of(received: list[Received], transaction_id: str) -> list[dict[str, Any]]:
    return [r.payload for r in received if r.kind == "call" and r.action == "TransactionEvent"
            and r.payload["transactionInfo"]["transactionId"] == transaction_id]


async def test_a_2_0_1_transaction_continued_on_1_6_and_killed_is_finished_on_2_0_1_with_contiguous_seq_no(
    tmp_path: Path,
) -> None:
    async with station(tmp_path, BOTH) as (csms, esp, rig):
        await csms.wait_for("StatusNotification", STATION_ID, timeout=20)
        await csms.call(STATION_ID, "RequestStartTransaction",
                        {"idToken": {"idToken": "SWITCH-201", "type": "ISO14443"}, "remoteStartId": 7})
        await esp.command("plug")
        await esp.command("ev_charge")
        started = await csms.wait_for("TransactionEvent", STATION_ID, lambda r: r.payload["eventType"] == "Started",
                                      timeout=20)
        tx_id = started.payload["transactionInfo"]["transactionId"]
        await csms.wait_for("TransactionEvent", STATION_ID,
                            lambda r: r.payload.get("triggerReason") == "MeterValuePeriodic", timeout=20)

        await rig.switch_to(ONLY_16, "16")  # 2.0.1 refused: the station falls back to 1.6
        on_16 = csms.mark()
        held = await rig.until(lambda s: (s["ocpp"].get("held_messages") or 0) >= 2 and s["ocpp"]["version"] == "16")
        assert unfinished(held, "201") >= 3  # the open transaction and its waiting messages
        await rig.kill()
        await rig.start()  # restarts on 1.6, the version this CSMS accepted last (remembered in SQLite)
        await csms.wait_connected(STATION_ID, timeout=30)
        await rig.until(lambda s: s["connectors"][0]["meter"] is not None)  # the meter read since the restart
        await esp.command("unplug")  # the transaction ends while the station speaks 1.6
        await rig.until(lambda s: s["connectors"][0]["transaction"] is None and s["ocpp"]["version"] == "16")
        assert not [r for r in csms.received[on_16:] if r.kind == "call" and r.action in V16_TRANSACTION | {"MeterValues"}
                    and (r.action != "MeterValues" or "transactionId" in r.payload)]

        csms.accept_subprotocols = BOTH  # 2.0.1 is back: the station returns to finish the transaction
        ended = await csms.wait_for("TransactionEvent", STATION_ID, lambda r: r.payload["eventType"] == "Ended",
                                    timeout=60)
        assert ended.version == "201"
        final = await rig.until(lambda s: s["outbox_depth"] == 0 and unfinished(s, "201") == 0)
        assert final["ocpp"]["parked_messages"] == 0

    events = events_of(csms.received, tx_id)
    seq_nos = sorted({e["seqNo"] for e in events})
    assert seq_nos == list(range(len(seq_nos)))  # contiguous: nothing lost across the switch and the kill
    by_seq = {e["seqNo"]: e for e in events}
    assert by_seq[0]["eventType"] == "Started" and by_seq[seq_nos[-1]]["eventType"] == "Ended"
    # Recorded while the station spoke 1.6: offline as far as the 2.0.1 CSMS is concerned.
    assert not by_seq[0].get("offline") and by_seq[seq_nos[-1]].get("offline") is True
    assert sum(e["eventType"] == "Updated" for e in by_seq.values()) >= 3
    readings = [v for s in seq_nos for v in energy(by_seq[s])]
    assert readings == sorted(readings)
    assert not csms.calls("StartTransaction") and not csms.calls("StopTransaction")


async def test_a_1_6_transaction_continued_on_2_0_1_and_killed_is_finished_on_1_6_with_its_transaction_id(
    tmp_path: Path,
) -> None:
    async with station(tmp_path, ONLY_16) as (csms, esp, rig):
        await csms.wait_for("StatusNotification", STATION_ID, lambda r: r.version == "16", timeout=20)
        await csms.call(STATION_ID, "RemoteStartTransaction", {"connectorId": 1, "idTag": "SWITCH-16"})
        await esp.command("plug")
        await esp.command("ev_charge")
        start = await csms.wait_for("StartTransaction", STATION_ID, timeout=20)
        await csms.wait_for("MeterValues", STATION_ID, lambda r: "transactionId" in r.payload, timeout=20)
        csms_tx = csms.last_transaction_id

        await rig.switch_to(ONLY_201, "201")  # 1.6 refused now: the station switches to 2.0.1
        switched = csms.mark()
        await rig.until(lambda s: (s["ocpp"].get("held_messages") or 0) >= 2 and s["ocpp"]["version"] == "201")
        await rig.kill()
        await rig.start()  # primary 2.0.1 is accepted at once after the restart
        await csms.wait_connected(STATION_ID, timeout=30)
        await rig.until(lambda s: s["connectors"][0]["meter"] is not None)  # the meter read since the restart
        await esp.command("unplug")
        status = await rig.until(lambda s: s["connectors"][0]["transaction"] is None and unfinished(s, "16") >= 1)
        assert status["ocpp"]["version"] == "201"
        assert not csms.calls("TransactionEvent")  # 2.0.1 never hears of a transaction it did not see start
        unplugged_at = csms.mark()

        csms.accept_subprotocols = BOTH  # 1.6 is back: the station returns to finish there
        stop = await csms.wait_for("StopTransaction", STATION_ID, timeout=60)
        await rig.until(lambda s: s["outbox_depth"] == 0 and unfinished(s, "16") == 0)

    assert stop.version == "16" and stop.payload["transactionId"] == csms_tx
    assert len(csms.calls("StartTransaction")) == 1
    values = [r for r in csms.calls("MeterValues") if "transactionId" in r.payload]
    assert all(r.payload["transactionId"] == csms_tx for r in values)
    late = [r for r in values if csms.received.index(r) > unplugged_at]
    assert late, "meter values recorded while on 2.0.1 were never delivered"
    stamps = [r.payload["meterValue"][0]["timestamp"] for r in values]
    assert stamps == sorted(stamps)
    # transactionData: the StopTxnSampledData readings kept since the start, then the Transaction.End value
    assert energy(stop.payload) == sorted(energy(stop.payload))
    readings = [v for r in values for v in energy(r.payload)] + energy(stop.payload)[-1:]
    assert readings == sorted(readings)
    assert stop.payload["meterStop"] >= start.payload["meterStart"]
    assert switched < unplugged_at
