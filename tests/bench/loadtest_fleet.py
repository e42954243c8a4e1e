"""`make loadtest`: `station loadtest` holding N stations against the dev CSMS, both as real processes.

    python -m tests.bench.loadtest_fleet [--stations 1000] [--seconds 120] [--out loadtest-results.json]

Prints the loadtest's report lines and one JSON summary: stations booted, calls per second, CSMS
round trips, and CPU and resident memory of the loadtest process and of the dev CSMS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.bench.common import cpu_seconds, free_port, rss_mb


async def run(stations: int, seconds: float, ocpp: str) -> dict[str, Any]:
    port = free_port()
    env = {**os.environ, "STATION_ENV_FILE": os.devnull}
    with tempfile.TemporaryDirectory(prefix="station-loadtest-") as tmp:
        csms_log = Path(tmp, "csms.log").open("wb")
        csms = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "station", "dev-csms", "--port", str(port), env=env,
            stdout=csms_log, stderr=csms_log)
        await asyncio.sleep(1.5)
        started = time.monotonic()
        load = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "station", "loadtest", "--stations", str(stations), "--ocpp", ocpp,
            "--csms", f"ws://127.0.0.1:{port}/ocpp{ocpp}/", "--duration", str(seconds), "--report-every", "10",
            env=env, stdout=asyncio.subprocess.PIPE)
        assert load.stdout is not None
        lines: list[dict[str, Any]] = []
        samples: list[dict[str, float]] = []
        last = {"csms": cpu_seconds(csms.pid), "load": cpu_seconds(load.pid), "at": time.monotonic()}
        while line := await load.stdout.readline():
            print(line.decode().rstrip(), flush=True)
            lines.append(json.loads(line))
            if lines[-1].get("summary") or load.returncode is not None:
                continue
            now = {"csms": cpu_seconds(csms.pid), "load": cpu_seconds(load.pid), "at": time.monotonic()}
            span = now["at"] - last["at"]
            samples.append({"t": round(now["at"] - started, 1),
                            "csms_cpu_percent": round((now["csms"] - last["csms"]) / span * 100, 1),
                            "csms_rss_mb": round(rss_mb(csms.pid), 1)})
            last = now
        await load.wait()
        csms.terminate()
        await csms.wait()
        csms_log.close()
    summary = lines[-1]
    steady = [s for s, line in zip(samples, lines, strict=False) if line.get("booted") == stations]
    return {
        "stations": stations, "ocpp": ocpp, "seconds": seconds, "loadtest": summary,
        "steady_state_reports": len(steady),
        "loadtest_reports": lines[:-1],
        "csms": {"peak_cpu_percent": max((s["csms_cpu_percent"] for s in samples), default=None),
                 "peak_rss_mb": max((s["csms_rss_mb"] for s in samples), default=None), "samples": samples},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stations", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--ocpp", choices=("201", "16"), default="201")
    parser.add_argument("--out", type=Path, default=Path("loadtest-results.json"))
    args = parser.parse_args()
    result = asyncio.run(run(args.stations, args.seconds, args.ocpp))
    args.out.write_text(json.dumps(result, indent=2))
    s = result["loadtest"]
    print(f"\n{args.stations} stations for {args.seconds:g} s: booted at end {s['booted_at_end']}, "
          f"calls {sum(s['calls_by_action'].values())}, errors {sum(s['errors_by_kind'].values())}, "
          f"loadtest peak CPU {s['peak_cpu_percent']} % / RSS {s['peak_rss_mb']} MB, "
          f"dev CSMS peak CPU {result['csms']['peak_cpu_percent']} % / RSS {result['csms']['peak_rss_mb']} MB"
          f"\nfull results: {args.out}")


if __name__ == "__main__":
    main()
