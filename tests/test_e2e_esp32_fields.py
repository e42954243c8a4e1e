"""A firmware build that reports an informational field differently (PWM per mille) charges normally:
the real daemon, the ESP32 simulator on a pty, the dev CSMS."""

from __future__ import annotations

import json
from pathlib import Path

from station.ipc.client import IpcClient
from tests.e2e import STATION_ID, running_station


async def test_a_pwm_reported_per_mille_charges_and_is_shown_as_a_warning_logged_once(tmp_path: Path) -> None:
    async with running_station(tmp_path, sim_args=["--pwm-scale", "permille"]) as (csms, sim, daemon):
        assert sim is not None
        await csms.wait_for("StatusNotification", STATION_ID, timeout=20)
        await sim.command("plug")
        answer = await csms.call(STATION_ID, "RequestStartTransaction",
                                 {"idToken": {"idToken": "E2E-TAG", "type": "ISO14443"}, "remoteStartId": 8})
        assert answer["status"] == "Accepted"
        await sim.command("ev_charge")
        await csms.wait_for("TransactionEvent", STATION_ID,
                            lambda r: r.payload["transactionInfo"].get("chargingState") == "Charging", timeout=15)
        charging = await sim.wait_for(lambda s: int(s["RL"]) == 1, timeout=10)
        pwm = str(charging["PWM"])  # per-mille duty: 533 at 32 A, 267 at 16 A
        assert int(pwm) > 255
        async with IpcClient(daemon.env["STATION_IPC_SOCKET"]) as client:
            for _ in range(3):  # several more polls with the same value
                await client.status()
            status = await client.status()
        statuses = [r.payload["connectorStatus"] for r in csms.calls("StatusNotification", STATION_ID)]
        assert "Faulted" not in statuses
        esp = status["esp32"]["1"]
        assert esp["link_up"] and esp["stats"]["frames_rejected"] == 0
        assert esp["warnings"] == [f"PWM={pwm} outside 0..255"]
    logged = [json.loads(line) for line in daemon.log().splitlines() if '"esp32.unexpected_value"' in line]
    assert [(e["field"], e["value"]) for e in logged if e["value"] == pwm] == [("PWM", pwm)]  # once per value
    assert f"PWM={pwm}" in next(e["raw"] for e in logged if e["value"] == pwm)
