"""Crash consistency of the real daemon: SIGKILL at random points, restart, CSMS up or down at random.

The daemon (`station run`, a real process) drives charging sessions on the ESP32
simulator (a real pty) and talks to the dev CSMS on loopback. Each trial does a few
random things (plug, charge, pause, unplug, start and stop from the CSMS or the local
IPC) and kills the daemon with SIGKILL at a random moment, sometimes stopping or
restarting the CSMS too. At the end the CSMS is up, the vehicle leaves, the outbox
drains, and what the CSMS received is checked against the state database:

- every transaction the station recorded reached the CSMS with its Started and its Ended;
- per transaction the 2.0.1 seqNo run 0..n without a gap, Started first, Ended last;
- a seqNo received twice is a byte-identical retransmission (OCPP delivery is at
  least once: a kill between the CSMS's confirmation and the outbox delete resends);
- energy readings (Modbus meter simulator) never decrease within a transaction; nothing is parked or left queued.

`make test` kills 20 times; `make soak` 200.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sqlite3
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from station.controller.simulator import SimulatorProcess
from station.devtools.csms import DevCsms, Received
from station.ipc.client import IpcClient
from station.meter.sim_process import MeterSimProcess
from tests.e2e import STATION_ID, DaemonProcess, controller_link_up, station_env
from tests.reliability import record

BOUNDED_KILLS = 20
ACTIONS = {"plug": 3, "ev_charge": 3, "ev_pause": 1, "unplug": 2, "ipc_start": 3, "ipc_stop": 1, "csms_start": 2,
           "csms_stop": 1, "wait": 1}
"""Weighted so that most trials start, run or end a session."""
SOAK_KILLS = 200


class CrashRig:
    def __init__(self, directory: Path, rng: random.Random) -> None:
        self.dir = directory
        self.rng = rng
        self.csms: DevCsms | None = None
        self.port = 0
        self.received: list[Received] = []
        self.daemon: DaemonProcess | None = None
        self.sim: SimulatorProcess | None = None
        self.env: dict[str, str] = {}
        self.kills = self.csms_toggles = self.crashes = 0

    # ---- CSMS --------------------------------------------------------------------
    async def csms_up(self) -> None:
        if self.csms is None:
            self.csms = await DevCsms(port=self.port, heartbeat_interval=5).start()
            self.port = self.csms.port

    async def csms_down(self) -> None:
        if self.csms is not None:
            await self.csms.stop()
            self.received.extend(self.csms.received)
            self.csms = None

    def all_received(self) -> list[Received]:
        return self.received + (self.csms.received if self.csms else [])

    # ---- daemon ------------------------------------------------------------------
    async def daemon_up(self) -> IpcClient:
        assert self.daemon is None
        self.daemon = await DaemonProcess(self.env, self.dir / "station.log").start()
        client = IpcClient(self.env["STATION_IPC_SOCKET"], timeout=5)
        async with asyncio.timeout(20):
            await controller_link_up(self.daemon, client)
        return client

    async def kill(self) -> None:
        assert self.daemon is not None and self.daemon.proc is not None
        if self.daemon.proc.returncode is not None:
            self.crashes += 1  # it died on its own
        await self.daemon.stop(signal.SIGKILL)
        self.daemon = None
        self.kills += 1

    # ---- one trial -----------------------------------------------------------------
    async def random_actions(self, ipc: IpcClient) -> None:
        rng, sim = self.rng, self.sim
        assert sim is not None
        for _ in range(rng.randint(2, 7)):
            action = rng.choices(list(ACTIONS), weights=list(ACTIONS.values()))[0]
            with contextlib.suppress(Exception):  # refused commands are part of the game
                if action in ("plug", "ev_charge", "ev_pause", "unplug"):
                    await sim.command(action)
                elif action == "ipc_start":
                    await ipc.start(1, f"TAG-{rng.randint(1, 3)}")
                elif action == "ipc_stop":
                    await ipc.stop(connector_id=1)
                elif action == "csms_start" and self.csms is not None:
                    await self.csms.call(STATION_ID, "RequestStartTransaction", {
                        "idToken": {"idToken": "CSMS-TAG", "type": "Central"}, "remoteStartId": rng.randint(1, 999)},
                        timeout=2)
                elif action == "csms_stop" and self.csms is not None:
                    status = await ipc.status()
                    tx = status["connectors"][0]["transaction"]
                    if tx:
                        await self.csms.call(STATION_ID, "RequestStopTransaction", {"transactionId": tx["id"]},
                                             timeout=2)
            await asyncio.sleep(rng.uniform(0, 0.3))

    async def trial(self) -> None:
        if self.rng.random() < 0.3:
            self.csms_toggles += 1
            await (self.csms_down() if self.csms is not None else self.csms_up())
        ipc = await self.daemon_up()
        try:
            await self.random_actions(ipc)
        finally:
            await ipc.close()
        await asyncio.sleep(self.rng.uniform(0, 0.3))
        await self.kill()

    async def drain(self) -> IpcClient:
        """CSMS up, vehicle gone, daemon running until every transaction ended and the outbox is empty."""
        assert self.sim is not None
        await self.csms_up()
        await self.sim.command("unplug")
        ipc = await self.daemon_up()
        db = self.dir / "state" / "station.db"
        async with asyncio.timeout(60):
            while True:
                with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
                    open_tx = con.execute("SELECT COUNT(*) FROM transactions WHERE ended_at IS NULL").fetchone()[0]
                    queued = con.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
                if open_tx == 0 and queued == 0:
                    return ipc
                await asyncio.sleep(0.2)


def energy_of(payload: dict[str, Any]) -> list[float]:
    values = []
    for mv in payload.get("meterValue") or []:
        for sv in mv.get("sampledValue") or []:
            if sv.get("measurand", "Energy.Active.Import.Register") == "Energy.Active.Import.Register":
                values.append(float(sv["value"]))
    return values


def check(received: list[Received], db: Path) -> dict[str, int]:
    """Everything the station stored reached the CSMS, once per seqNo, in order; returns the counts."""
    events = [r for r in received if r.kind == "call" and r.action == "TransactionEvent" and r.station_id == STATION_ID]
    by_tx: dict[str, dict[int, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in events:
        by_tx[r.payload["transactionInfo"]["transactionId"]][int(r.payload["seqNo"])].append(r.payload)
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
        stored = {row[0]: row[1] for row in con.execute("SELECT id, seq_next FROM transactions")}
        parked = con.execute("SELECT COUNT(*) FROM outbox WHERE parked=1").fetchone()[0]
    lost = duplicated = resent = readings = 0
    problems: list[str] = []
    for tx_id, seq_next in stored.items():
        seqs = by_tx.get(tx_id, {})
        missing = sorted(set(range(seq_next)) - set(seqs))
        if missing:
            lost += len(missing)
            problems.append(f"{tx_id}: seqNo {missing} never reached the CSMS (station recorded 0..{seq_next - 1})")
    for tx_id, seqs in by_tx.items():
        if tx_id not in stored:
            problems.append(f"{tx_id}: the CSMS got a transaction the station has no record of")
            continue
        if set(seqs) - set(range(stored[tx_id])):
            problems.append(f"{tx_id}: seqNo beyond what the station recorded: {sorted(seqs)}")
        for seq, copies in seqs.items():
            if len(copies) > 1:
                resent += len(copies) - 1
                if any(json.dumps(c, sort_keys=True) != json.dumps(copies[0], sort_keys=True) for c in copies):
                    duplicated += 1
                    problems.append(f"{tx_id} seqNo {seq}: received {len(copies)} times with different content")
        ordered = [seqs[s][0] for s in sorted(seqs)]
        kinds = [p["eventType"] for p in ordered]
        duplicated += max(0, kinds.count("Started") - 1) + max(0, kinds.count("Ended") - 1)
        if kinds[0] != "Started" or kinds.count("Started") != 1:
            problems.append(f"{tx_id}: Started is not exactly the first event: {kinds}")
        if kinds[-1] != "Ended" or kinds.count("Ended") != 1:
            problems.append(f"{tx_id}: Ended is not exactly the last event: {kinds}")
        energy = [e for p in ordered for e in energy_of(p)]
        readings += len(energy)
        if energy != sorted(energy):
            problems.append(f"{tx_id}: energy readings decrease: {energy}")
    if parked:
        problems.append(f"{parked} outbox entries parked (never sent again)")
    assert not problems, "\n".join(problems[:20])
    return {"transactions": len(stored), "events": len(events), "lost": lost, "duplicated": duplicated, "resent": resent,
            "readings": readings}


async def run_crash_trials(tmp_path: Path, kills: int) -> None:
    seed = int(os.environ.get("STATION_CRASH_SEED", random.randrange(1 << 30)))
    print(f"crash trials: seed {seed} (STATION_CRASH_SEED={seed} reproduces the schedule)")
    rig = CrashRig(tmp_path, random.Random(seed))
    await rig.csms_up()
    assert rig.csms is not None
    async with (
        MeterSimProcess(tmp_path, speedup=200, energy_wh=1_000_000) as meter,
        SimulatorProcess(tmp_path, interval=1, extra_args=["--meter-control", str(meter.control)]) as sim,
    ):
        rig.sim = sim
        rig.env = station_env(tmp_path, rig.csms, sim.port, OCPP_PRIMARY="201", STATION_METER_VALUE_SECONDS="1",
                              OCPP_HEARTBEAT_SECONDS="5", STATION_METER_PORT=str(meter.link),
                              STATION_METER_POLL_SECONDS="0.2")
        try:
            for _ in range(kills):
                await rig.trial()
            ipc = await rig.drain()
            await ipc.close()
            assert rig.daemon is not None
            assert await rig.daemon.stop(signal.SIGTERM) == 0
            rig.daemon = None
        finally:
            if rig.daemon is not None:
                await rig.daemon.stop(signal.SIGKILL)
            await rig.csms_down()
    counts = check(rig.received, tmp_path / "state" / "station.db")
    log = (tmp_path / "station.log").read_text(errors="replace")
    crashes = rig.crashes + log.count('"background task failed"')
    print(f"crash trials: {kills} SIGKILLs, {rig.csms_toggles} CSMS stops/starts, {counts['transactions']} transactions, "
          f"{counts['events']} TransactionEvents and {counts['readings']} energy readings checked, lost {counts['lost']}, duplicated {counts['duplicated']}, resent (identical) {counts['resent']}, "
          f"crashes {crashes}")
    record("crash consistency", trials=kills, faults=kills + rig.csms_toggles, events_checked=counts["events"],
           lost=counts["lost"], duplicated=counts["duplicated"], resent=counts["resent"], crashes=crashes)
    assert crashes == 0


async def test_sigkill_at_random_points_loses_and_reorders_no_transaction_event(tmp_path: Path) -> None:
    await run_crash_trials(tmp_path, BOUNDED_KILLS)


@pytest.mark.slow
async def test_soak_200_sigkills_lose_and_reorder_no_transaction_event(tmp_path: Path) -> None:
    await run_crash_trials(tmp_path, SOAK_KILLS)
