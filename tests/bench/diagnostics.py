"""Cost of the flight recorder per message and size/build time of a GetLog archive (prints JSON).

    python -m tests.bench.diagnostics [--mb 16]

The ring is filled with the traffic of one connector (ESP32 poll every 250 ms: a command out and a
status frame in; a meter reading a second; a charging session's OCPP frames every 10 s) until it
holds its configured size, then the archive GetLog would upload is built for the whole ring and
for the last hour, as the daemon does (same code, worker thread left out).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from station.core.model import MeterReading
from station.diagnostics import archive
from station.diagnostics.recorder import SEGMENTS, FlightRecorder

STATUS_FRAME = b"<STAT;CP=2;CPV=2112;PP=1;PPV=1490;RL=1;LOCK=1;MOTOR=0;PWM=266;MAX=16;CABLE=32;AUTH=1;STATE=3;PB=0;STOP=0;>\r\n"
COMMAND = b"A\x00,\x00\x10"
TX_EVENT = ('[2,"0b8c9e0e-6a1c-4f5e-9d55-3c3c9b7a1e2f","TransactionEvent",{"eventType":"Updated",'
            '"timestamp":"2026-11-30T00:12:03.123Z","triggerReason":"MeterValuePeriodic","seqNo":12,'
            '"transactionInfo":{"transactionId":"7c1f0d1e-5f7e-4b3a-9c7e-1a2b3c4d5e6f","chargingState":"Charging"},'
            '"evse":{"id":1,"connectorId":1},"meterValue":[{"timestamp":"2026-11-30T00:12:03.123Z","sampledValue":['
            + ",".join('{"value":%d.0,"measurand":"Energy.Active.Import.Register","unitOfMeasure":{"unit":"Wh"}}' % i
                       for i in range(12)) + ']}]}]')
READING = MeterReading(energy_import_wh=123456.0, power_w=11000.0, current_a=(16.0, 16.1, 15.9),
                       voltage_v=(230.1, 229.8, 231.0), frequency_hz=50.0, power_factor=0.99)


def per_call_us(fn, n: int = 20000) -> float:
    started = time.perf_counter()
    for _ in range(n):
        fn()
    return round((time.perf_counter() - started) / n * 1e6, 2)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        clock = [time.time() - 24 * 3600]
        recorder = FlightRecorder(directory / "ring", segments=SEGMENTS, segment_bytes=args.mb * 1024 * 1024 // SEGMENTS,
                                  clock=lambda: clock[0])
        figures = {
            "record_esp32_rx_us": per_call_us(lambda: recorder.esp32(1, "rx", STATUS_FRAME)),
            "record_ocpp_transaction_event_us": per_call_us(lambda: recorder.record("ocpp", "out", TX_EVENT)),
            "record_meter_us": per_call_us(lambda: recorder.meter(1, READING), 5000),
        }
        for path in recorder.segment_paths():
            path.unlink()
        recorder = FlightRecorder(directory / "ring", segments=SEGMENTS, segment_bytes=args.mb * 1024 * 1024 // SEGMENTS,
                                  clock=lambda: clock[0])
        lines = 0
        while recorder.size_bytes() < args.mb * 1024 * 1024 * 0.97 and lines < 5_000_000:
            for tick in range(40):  # 10 s of traffic
                clock[0] += 0.25
                recorder.esp32(1, "tx", COMMAND)
                recorder.esp32(1, "rx", STATUS_FRAME)
                if tick % 4 == 0:
                    recorder.meter(1, READING)
                lines += 2
            recorder.record("ocpp", "out", TX_EVENT)
            recorder.flush()
        recorder.close()
        first = recorder.segment_paths()[0].read_text()[:24]
        span_h = (clock[0] - datetime.fromisoformat(first.replace("Z", "+00:00")).timestamp()) / 3600
        figures["ring_mb"] = round(recorder.size_bytes() / 1e6, 1)
        figures["ring_hours_of_one_connector"] = round(span_h, 1)
        log_file = directory / "station.log"
        log_file.write_text("".join(f'{{"timestamp": "2026-11-30T00:00:{i % 60:02d}Z", "event": "ocpp -> Heartbeat"}}\n'
                                    for i in range(20000)))
        for label, since in (("whole_ring", None), ("last_hour", clock[0] - 3600)):
            sources = archive.Sources(station_id="BENCH_1", config={"settings": {"station_name": "BENCH_1"}},
                                      snapshot={"connectors": []}, recorder_lines=recorder.lines, log_file=log_file)
            built = archive.build(directory / "out", sources,
                                  since=datetime.fromtimestamp(since, UTC) if since else None,
                                  until=datetime.fromtimestamp(clock[0], UTC), now=datetime.now(UTC), name=f"{label}.tar.gz")
            figures[f"archive_{label}_kb"] = round(built.size_bytes / 1024, 1)
            figures[f"archive_{label}_build_s"] = round(built.seconds, 3)
            figures[f"archive_{label}_recorder_mb_in"] = round(built.members["flight-recorder.log"] / 1e6, 2)
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
