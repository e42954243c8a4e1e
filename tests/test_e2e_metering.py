"""A full charging session through both simulators: OCPP meter values follow the simulated current."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.e2e import STATION_ID, metered_station


def samples(event: Any) -> dict[str, float]:
    return {
        s["measurand"] + (f".{s['phase']}" if "phase" in s else ""): float(s["value"])
        for mv in event.payload.get("meterValue", []) for s in mv["sampledValue"]
    }


async def test_session_through_esp32_and_meter_simulators_reports_rising_energy_and_real_power(
    tmp_path: Path,
) -> None:
    async with metered_station(tmp_path, energy_wh=1_000_000, esp_args=["--max-current", "16"],
                               STATION_METER_VALUE_SECONDS="1", STATION_MAX_CURRENT_A="16") as (csms, _, esp, _):
        await csms.call(STATION_ID, "RequestStartTransaction",
                        {"idToken": {"idToken": "METER-TAG", "type": "ISO14443"}, "remoteStartId": 1})
        await esp.command("plug")
        await esp.command("ev_charge")
        since = len(csms.received)

        def periodic_with_power(r: Any) -> bool:
            return r.payload.get("triggerReason") == "MeterValuePeriodic" and \
                samples(r).get("Power.Active.Import", 0) > 0

        first = await csms.wait_for("TransactionEvent", STATION_ID, periodic_with_power, timeout=20, since=since)
        later = await csms.wait_for(
            "TransactionEvent", STATION_ID,
            lambda r: periodic_with_power(r) and samples(r)["Energy.Active.Import.Register"]
            > samples(first)["Energy.Active.Import.Register"],
            timeout=20, since=csms.received.index(first) + 1,
        )
        values = samples(later)
        # 16 A on three phases at ~230 V: about 11 kW.
        assert 9_000 < values["Power.Active.Import"] < 13_000
        assert all(15 < values[f"Current.Import.L{p}"] < 17 for p in (1, 2, 3))
        assert all(207 < values[f"Voltage.L{p}-N"] < 253 for p in (1, 2, 3))
        await esp.command("unplug")
        ended = await csms.wait_for("TransactionEvent", STATION_ID,
                                    lambda r: r.payload["eventType"] == "Ended", timeout=10)
        energies = [samples(r).get("Energy.Active.Import.Register")
                    for r in csms.calls("TransactionEvent", STATION_ID) if samples(r)]
        assert energies == sorted(energies)
        assert samples(ended)["Energy.Active.Import.Register"] > 1_000_000
