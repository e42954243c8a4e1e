"""Secrets never leak: a canary password, CSMS-set key, API token and driver token through everything a technician or an attacker sees.

The real daemon, the real API process, the real CLI and a real dev CSMS that demands
the canary password. A whole charging session, control through the API (right and
wrong token), `--once`, `station status`, `config show`, a failed login, a CSMS that is
down, a broken configuration. Then every byte of the daemon and API logs, every
stdout/stderr, every API response (body and headers) and the state database files
are searched for the canaries, as given and base64-encoded in a Basic auth header.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import signal
import sys
import uuid
from pathlib import Path

import httpx

from station.controller.simulator import SimulatorProcess
from station.devtools.csms import DevCsms
from station.devtools.demo import free_port
from tests.e2e import STATION_ID, DaemonProcess, station_env
from tests.reliability import record



async def run_cli(env: dict[str, str], *args: str, timeout: float = 60) -> tuple[str, bytes]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "station", *args, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return f"station {' '.join(args)} (exit {proc.returncode})", out + b"\n" + err


async def test_canary_password_key_and_tokens_appear_in_no_log_output_response_or_readable_database(tmp_path: Path) -> None:
    password = f"canary-pw-{uuid.uuid4().hex[:12]}"
    wrong = f"canary-wrong-{uuid.uuid4().hex[:12]}"
    token = f"canary-tok-{uuid.uuid4().hex[:16]}"
    key = f"canarykey{uuid.uuid4().hex[:16]}"  # a BasicAuthPassword the CSMS sets (refused by it: falls back)
    driver = f"DRV{uuid.uuid4().hex[:12].upper()}"  # a driver's RFID token (personal data)
    canaries = {password, wrong, token, key, driver}
    canaries |= {base64.b64encode(f"{STATION_ID}:{p}".encode()).decode() for p in (password, wrong)}
    seen: list[tuple[str, bytes]] = []
    api_port = free_port()

    async with DevCsms(heartbeat_interval=5, passwords={STATION_ID: password}) as csms, \
            SimulatorProcess(tmp_path, interval=1) as sim:
        env = station_env(tmp_path, csms, sim.port, OCPP_STATION_PASSWORD=password, STATION_API_TOKEN=token,
                          STATION_API_BIND=f"127.0.0.1:{api_port}")
        daemon = await DaemonProcess(env, tmp_path / "station.log").start()
        api_log = (tmp_path / "api.log").open("wb")
        api_proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "api", env=env, stdout=api_log,
                                                        stderr=api_log)
        try:
            await daemon.wait_ipc()
            await csms.wait_for("StatusNotification", STATION_ID, timeout=20)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}", timeout=10) as api:
                async with asyncio.timeout(20):
                    while True:
                        with contextlib.suppress(httpx.HTTPError):
                            if (await api.get("/health")).status_code == 200:
                                break
                        await asyncio.sleep(0.1)
                good = {"Authorization": f"Bearer {token}"}
                bad = {"Authorization": f"Bearer {wrong}"}

                async def keep(response: httpx.Response) -> httpx.Response:
                    headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
                    seen.append((f"API {response.request.method} {response.request.url.path} {response.status_code}",
                                 headers.encode() + b"\n" + response.content))
                    return response

                # A whole session, started through the API.
                await sim.command("plug")
                assert (await keep(await api.post("/connectors/1/start", json={"id_token": driver},
                                                  headers=bad))).status_code == 401
                assert (await keep(await api.post("/connectors/1/start", json={"id_token": driver},
                                                  headers=good))).status_code == 200
                await csms.wait_for("TransactionEvent", STATION_ID, lambda r: r.payload["eventType"] == "Started",
                                    timeout=10)
                await sim.command("ev_charge")
                await sim.wait_for(lambda s: s["RL"] == 1, timeout=10)
                for path in ("/health", "/ready", "/status", "/connectors", "/connectors/1", "/transactions",
                             "/events/recent", "/metrics", "/", "/connectors/9", "/nope"):
                    await keep(await api.get(path, headers=good))
                await keep(await api.get("/status", headers=bad))
                await keep(await api.put("/connectors/1/limit", json={"amps": "lots"}, headers=good))
                await keep(await api.put("/connectors/1/limit", json={"amps": 10}, headers={"Authorization": token}))
                await sim.command("unplug")
                await csms.wait_for("TransactionEvent", STATION_ID, lambda r: r.payload["eventType"] == "Ended",
                                    timeout=10)
                for path in ("/transactions", "/events/recent", "/status"):
                    await keep(await api.get(path, headers=good))
                # The CSMS sets a new password (the canary key); it refuses it at the next connect.
                await csms.call(STATION_ID, "SetVariables", {"setVariableData": [{
                    "component": {"name": "SecurityCtrlr"}, "variable": {"name": "BasicAuthPassword"},
                    "attributeValue": key}]})
                await csms.call(STATION_ID, "TriggerMessage", {"requestedMessage": "Heartbeat"})
            seen.append(await run_cli(env, "--once"))
            seen.append(await run_cli(env, "status"))
            seen.append(await run_cli(env, "status", "--json"))
        finally:
            api_proc.send_signal(signal.SIGTERM)
            await api_proc.wait()
            api_log.close()
            assert await daemon.stop() == 0

        seen.append(await run_cli(env, "config", "show"))
        seen.append(await run_cli(env, "config", "show", "--json"))
        # A failed login: the daemon and --once with the wrong password.
        wrong_env = {**env, "OCPP_STATION_PASSWORD": wrong}
        failing = await DaemonProcess(wrong_env, tmp_path / "station.log").start()
        async with asyncio.timeout(20):
            while len(csms.auth_failures) < 2:
                await asyncio.sleep(0.1)
        await failing.stop()
        seen.append(await run_cli(wrong_env, "--once", "--timeout", "5"))
    # The CSMS is gone; the configuration is broken.
    seen.append(await run_cli(env, "--once", "--timeout", "5"))
    seen.append(await run_cli({**env, "OCPP_PRIMARY": "99"}, "config", "show"))
    seen.append(await run_cli({**env, "OCPP_201_URL": f"ws://{STATION_ID}:{password}@"}, "--once", "--timeout", "3"))
    seen.append(await run_cli({**env, "STATION_MAX_CURRENT_A": "x"}, "run"))

    seen.append(("daemon log", (tmp_path / "station.log").read_bytes()))
    seen.append(("API log", (tmp_path / "api.log").read_bytes()))
    db_files = sorted((tmp_path / "state").glob("station.db*"))
    assert {f.name for f in db_files} >= {"station.db"}
    for db_file in db_files:
        # The driver's token is in the database (it is the transaction's record), which only the
        # daemon's user may read: the API's group cannot, so nothing of it is "the API's dump".
        assert db_file.stat().st_mode & 0o077 == 0, f"{db_file.name} is readable beyond the daemon's user"
        seen.append((f"state database {db_file.name}", db_file.read_bytes().replace(driver.encode(), b"<driver>")))

    leaks = [(where, canary) for where, data in seen for canary in canaries if canary.encode() in data]
    lines = sum(data.count(b"\n") + 1 for _, data in seen)
    record("secrets", trials=1, faults=len(csms.auth_failures), events_checked=lines, lost=len(leaks))
    assert len(csms.auth_failures) >= 2, "the failed login did not happen"
    logged = dict(seen)["daemon log"]
    assert b"transaction ended" in logged and b"authentication" in logged.lower()  # the search saw real traffic
    assert f"****{driver[-4:]}".encode() in logged  # the driver's frames were logged, masked
    assert not leaks, f"canary leaked: {leaks}"
