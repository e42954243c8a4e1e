"""Baseline: the bare `ocpp` library client (no core, no SQLite, no ESP32) doing the benchmarks' exchanges.

Run beside the station so each figure comes with a ratio to what the library alone costs on
this machine at this moment. Writes its own timings (time.monotonic()) as JSON to --out.

    python -m tests.bench.bare_client boot|status|replay|remote --url ws://127.0.0.1:PORT/ocpp201/ --out FILE
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import websockets
from ocpp.routing import on
from ocpp.v201 import ChargePoint, call, call_result

from tests.bench.workload import ENERGY_BASE_WH, KINDS, TRIGGERS

STATION_ID = "BARE_LIBRARY_CP"


def now() -> str:
    return datetime.now(UTC).isoformat()


def transaction_event(i: int) -> call.TransactionEvent:
    """The same message the station sends for queued event i (see tests/bench/workload.py)."""
    number, step = divmod(i, len(KINDS))
    context = {0: "Transaction.Begin", 3: "Transaction.End"}.get(step, "Sample.Periodic")
    samples: list[dict[str, Any]] = [
        {"value": ENERGY_BASE_WH + i, "context": context, "measurand": "Energy.Active.Import.Register",
         "unitOfMeasure": {"unit": "Wh"}},
        {"value": 7360.0, "context": context, "measurand": "Power.Active.Import", "unitOfMeasure": {"unit": "W"}},
    ]
    for phase, amps, volts in (("L1", 10.7, 230.1), ("L2", 10.6, 229.8), ("L3", 10.7, 230.4)):
        samples.append({"value": amps, "context": context, "measurand": "Current.Import", "phase": phase,
                        "unitOfMeasure": {"unit": "A"}})
    for phase, volts in (("L1-N", 230.1), ("L2-N", 229.8), ("L3-N", 230.4)):
        samples.append({"value": volts, "context": context, "measurand": "Voltage", "phase": phase,
                        "unitOfMeasure": {"unit": "V"}})
    samples.append({"value": 50.0, "context": context, "measurand": "Frequency", "unitOfMeasure": {"unit": "Hz"}})
    info: dict[str, Any] = {"transactionId": f"bench-{number:06d}", "chargingState": "Charging"}
    if step == 3:
        info["stoppedReason"] = "EVDisconnected"
    return call.TransactionEvent(
        event_type=("Started", "Updated", "Updated", "Ended")[step], timestamp=now(), trigger_reason=TRIGGERS[step],
        seq_no=step, transaction_info=info, evse={"id": 1, "connectorId": 1}, offline=True,
        id_token={"idToken": "BENCHTAG", "type": "ISO14443"} if step == 0 else None,
        meter_value=[{"timestamp": now(), "sampledValue": samples}],
    )


class BareStation(ChargePoint):
    remote_starts: list[float]

    @on("RequestStartTransaction")
    def on_request_start(self, id_token: dict[str, Any], remote_start_id: int, **_: Any) -> call_result.RequestStartTransaction:
        self.remote_starts.append(time.monotonic())
        return call_result.RequestStartTransaction(status="Accepted")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"mode": args.mode}
    async with websockets.connect(args.url + STATION_ID, subprotocols=["ocpp2.0.1"]) as ws:  # type: ignore[list-item]
        cp = BareStation(STATION_ID, ws)
        cp.remote_starts = []
        serving = asyncio.create_task(cp.start())
        await cp.call(call.BootNotification(charging_station={"model": "AC22", "vendorName": "Orge"}, reason="PowerUp"))
        out["boot_accepted"] = time.monotonic()
        if args.mode == "status":
            sent = []
            for k in range(args.count):
                sent.append(time.monotonic())
                await cp.call(call.StatusNotification(timestamp=now(), connector_status="Occupied" if k % 2 == 0 else "Available",
                                                      evse_id=1, connector_id=1))
                await asyncio.sleep(args.pause)
            out["sent"] = sent
        elif args.mode == "replay":
            started = time.monotonic()
            for i in range(args.count):
                await cp.call(transaction_event(i))
            out["replay_seconds"] = time.monotonic() - started
        elif args.mode == "remote":
            async with asyncio.timeout(args.seconds):
                while len(cp.remote_starts) < args.count:
                    await asyncio.sleep(0.01)
            out["remote_starts"] = cp.remote_starts
        serving.cancel()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=("boot", "status", "replay", "remote"))
    parser.add_argument("--url", required=True, help="CSMS base URL ending in /")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--pause", type=float, default=0.002)
    parser.add_argument("--seconds", type=float, default=120)
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)  # the library logs every frame at INFO; a station would too, but to a file
    args.out.write_text(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
