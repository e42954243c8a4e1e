"""A full or read-only state database: charging goes on safely, the condition is reported, nothing is lost.

Unit level (always): the real core on a real SQLite file whose growth is capped
(`PRAGMA max_page_count`, exactly what a full disk looks like to SQLite) or made
read-only (`PRAGMA query_only`). Daemon level (when this machine lets root mount a
tmpfs): the real `station run` with its state directory on a 1 MB tmpfs that is
filled up (twice); IPC status and `station --once` report it, and once space returns
every event reaches the CSMS with contiguous seqNos. (A read-only remount is refused
while the daemon holds the database open, so read-only is covered at unit level.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from station.core.model import ControllerState, PilotState
from station.core.station import StationCore
from station.core.store import Store
from tests.core_helpers import RecordingController
from tests.station_rig import Daemon, api, daemon, sock_path  # noqa: F401 - fixtures
from tests.station_rig import settle as rig_settle
from tests.reliability import record

assert api and daemon and sock_path


def outbox(store: Store) -> list[tuple[str, int, str]]:
    return [(e.transaction_id, e.seq_no, e.kind) for e in store.pending_outbox(1000)]


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


@pytest.mark.parametrize("condition", ["full", "read-only"])
async def test_unwritable_state_database_keeps_charging_reports_it_and_loses_no_event(
    tmp_path: Path, condition: str
) -> None:
    store = Store(tmp_path / "state.db")
    core = StationCore(store=store)
    esp = RecordingController.attached(core)
    esp.plug()
    core.request_start(1, "TAG-1")
    await settle()
    tx = core.connectors[1].transaction
    assert tx is not None
    stored_before = outbox(store)
    assert stored_before[0] == (tx.id, 0, "started")

    db = store._db  # the daemon's own connection: what it sees is what a full / read-only disk shows it
    if condition == "full":
        db.execute(f"PRAGMA max_page_count={db.execute('PRAGMA page_count').fetchone()[0]}")
    else:
        db.execute("PRAGMA query_only=1")
    for _ in range(30):  # enough events to need new pages
        esp.ev_requests_charge()
        await settle()
        esp._emit(pilot=PilotState.B, relay_closed=False, state=ControllerState.PAUSED)
        await settle()
    esp.ev_requests_charge()
    await settle()
    # Charging goes on, safely: the controller is authorized only with the transaction running.
    assert esp.current.authorized and esp.current.relay_closed
    snapshot = core.snapshot()["store"]
    assert snapshot["healthy"] is False and snapshot["unsaved_events"] > 0
    assert ("full" if condition == "full" else "readonly") in (snapshot["last_error"] or "").replace("-", "")
    esp.unplug()
    await settle()
    assert core.connectors[1].transaction is None
    assert not esp.current.authorized
    # Nothing already stored was lost meanwhile.
    assert set(stored_before) <= set(outbox(store))

    if condition == "full":
        db.execute("PRAGMA max_page_count=1073741823")
    else:
        db.execute("PRAGMA query_only=0")
    core.tick()
    entries = outbox(store)
    assert core.snapshot()["store"] == {"healthy": True, "last_error": snapshot["last_error"], "unsaved_events": 0}
    assert [seq for _, seq, _ in entries] == list(range(len(entries)))
    assert entries[0][2] == "started" and entries[-1][2] == "ended"
    assert store.get_transaction(tx.id).ended_at is not None  # type: ignore[union-attr]
    record("disk (unit)", trials=1, faults=1, events_checked=len(entries))
    await core.close()
    store.close()


# --------------------------------------------------------------------------- daemon level, on a real tmpfs

def _can_mount() -> bool:
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    probe = Path(f"/tmp/station-mount-probe-{uuid.uuid4().hex[:8]}")
    probe.mkdir()
    try:
        ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)],
                            capture_output=True).returncode == 0
        if ok:
            subprocess.run(["umount", str(probe)], capture_output=True)
        return ok
    finally:
        probe.rmdir()


@contextlib.contextmanager
def tiny_tmpfs(path: Path, size: str = "1m") -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(directory: Path) -> Path:
    """Write a filler file until the file system is full."""
    filler = directory / "filler"
    with contextlib.suppress(OSError), filler.open("wb") as f:
        while True:
            f.write(b"\0" * 4096)
            f.flush()
    return filler


needs_mount = pytest.mark.skipif(not _can_mount(), reason="needs root allowed to mount a tmpfs")


@needs_mount
async def test_daemon_on_a_full_state_disk_charges_reports_and_loses_nothing(tmp_path: Path) -> None:
    from station.controller.simulator import SimulatorProcess
    from station.devtools.csms import DevCsms
    from station.ipc.client import IpcClient
    from tests.e2e import STATION_ID, DaemonProcess, station_env

    state = tmp_path / "state"
    with tiny_tmpfs(state):
        async with DevCsms(heartbeat_interval=5) as csms, SimulatorProcess(tmp_path, interval=1) as sim:
            env = station_env(tmp_path, csms, sim.port, STATION_METER_VALUE_SECONDS="1")
            daemon = await DaemonProcess(env, tmp_path / "station.log").start()
            ipc = IpcClient(env["STATION_IPC_SOCKET"], timeout=5)
            try:
                await daemon.wait_ipc()
                await csms.wait_for("StatusNotification", STATION_ID, timeout=20)
                await sim.command("plug")
                await asyncio.sleep(0.5)
                await ipc.start(1, "TAG-1")
                started = await csms.wait_for("TransactionEvent", STATION_ID,
                                              lambda r: r.payload["eventType"] == "Started", timeout=10)
                tx_id = started.payload["transactionInfo"]["transactionId"]

                async def store_state() -> dict:
                    return (await ipc.status())["store"]

                for _ in range(2):  # full, space freed; full again, freed again
                    filler = fill(state)
                    # The EV charges and pauses: events the daemon cannot write.
                    await sim.command("ev_charge")
                    await sim.wait_for(lambda s: s["RL"] == 1, timeout=10)
                    async with asyncio.timeout(10):  # the station polls: let it see the charging first
                        while (await ipc.status())["connectors"][0]["status"] != "Charging":
                            await asyncio.sleep(0.05)
                    async with asyncio.timeout(15):
                        while (await store_state())["healthy"]:
                            await asyncio.sleep(0.2)
                    await sim.command("ev_pause")
                    await asyncio.sleep(1.5)
                    status = await store_state()
                    assert status["healthy"] is False and status["last_error"]
                    once = await asyncio.create_subprocess_exec(
                        sys.executable, "-m", "station", "--once", env=env,
                        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
                    out, _ = await once.communicate()
                    report = json.loads(out)
                    checks = {c["name"]: c for c in report["checks"]}
                    assert report["mode"] == "daemon" and checks["state_store"]["ok"] is False, out[:3000]
                    filler.unlink()
                    async with asyncio.timeout(15):
                        while not (await store_state())["healthy"]:
                            await asyncio.sleep(0.2)
                await sim.command("unplug")
                await csms.wait_for("TransactionEvent", STATION_ID,
                                    lambda r: r.payload["eventType"] == "Ended", timeout=15)
                events = [r.payload for r in csms.calls("TransactionEvent", STATION_ID)
                          if r.payload["transactionInfo"]["transactionId"] == tx_id]
                seqs = sorted({p["seqNo"] for p in events})
                assert seqs == list(range(len(seqs))), seqs
                kinds = [p["eventType"] for p in sorted(events, key=lambda p: p["seqNo"])]
                assert kinds[0] == "Started" and kinds[-1] == "Ended"
                states = [(p["seqNo"], p["triggerReason"], p["transactionInfo"].get("chargingState")) for p in
                          sorted(events, key=lambda p: p["seqNo"])]
                assert "Charging" in {state for _, _, state in states}, states
                assert len(seqs) >= 4, states  # Started, events written late (one full disk each round), Ended
                record("disk (daemon)", trials=1, faults=2, events_checked=len(events))
            finally:
                await ipc.close()
                assert await daemon.stop(signal.SIGTERM) == 0, daemon.log()[-3000:]



async def test_ready_is_503_and_names_an_unwritable_state_database(api: httpx.AsyncClient, daemon: Daemon) -> None:
    """/ready (the API under uvicorn, over the real IPC server) reports what the core reports."""
    assert (await api.get("/ready")).json()["store"]["ok"] is True
    db = daemon.core.store._db
    db.execute("PRAGMA query_only=1")
    daemon.core.request_start(1, "TAG-1")
    daemon.esp.plug()
    await rig_settle()
    response = await api.get("/ready")
    assert response.status_code == 503
    store = response.json()["store"]
    assert store["ok"] is False and "readonly" in store["detail"].replace("-", "").replace(" ", "")
    db.execute("PRAGMA query_only=0")
    daemon.core.tick()
    assert (await api.get("/ready")).json()["store"]["ok"] is True
