"""Parked transaction messages: visible (IPC, API, CLI, metrics) and released by an operator."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from ocpp.exceptions import InternalError

from station.core.clock import Clock
from station.core.store import OutboxEntry, Store, TransactionRecord
from station.devtools.csms import DevCsms, Received
from station.ipc.client import IpcClient, IpcError
from station.ipc.server import IpcServer
from tests.e2e import station_cli
from tests.ocpp_helpers import Rig, eventually
from tests.station_rig import Daemon, api, auth, daemon, sock_path  # noqa: F401

assert api and daemon and sock_path


def park_one(store: Store, tx_id: str = "tx-parked") -> int:
    """A Started the CSMS refused too often, as the outbox pump leaves it."""
    tx = TransactionRecord(tx_id, 1, "TAG-SECRET-9", "ISO14443", None, "2026-01-01T00:00:00+00:00", seq_next=1)
    entry = OutboxEntry(0, tx_id, 1, "started", 0, "Authorized", Clock(trusted=True).stamp(), False,
                        {"id_token": "TAG-SECRET-9"})
    with store.transaction("seed") as db:
        store.save_transaction(db, tx)
        entry_id = store.append_outbox(db, entry)
    store.retry_outbox(entry_id, "CALLERROR InternalError: CSMS database down", 0, park=True)
    return entry_id


async def test_a_released_parked_message_is_sent_again_and_confirmed(tmp_path: Path) -> None:
    def refuse(_: Received) -> dict[str, object]:
        raise InternalError(description="CSMS database down")

    async with DevCsms() as csms:
        rig = Rig("201", csms, tmp_path / "station.db")
        seed = Store(rig.db)
        seed.put("ocpp:TransactionMessageAttempts", 1)
        seed.close()
        await rig.start()
        assert rig.core is not None and rig.esp is not None
        core = rig.core
        server = IpcServer(tmp_path / "station.sock", core, status=dict)
        await server.start()
        try:
            await csms.wait_for("StatusNotification", timeout=10)
            csms.override("TransactionEvent", refuse)
            core.request_start(1, "TAG1", "ISO14443", trigger="Authorized")
            rig.esp.plug()
            await eventually(lambda: core.store.parked_count() >= 1)
            async with IpcClient(tmp_path / "station.sock") as ipc:
                listed = await ipc.outbox()
                assert [e["kind"] for e in listed["parked"]][:1] == ["started"]
                assert "TAG1" not in str(listed)  # a driver's token never leaves the store
                csms.override("TransactionEvent", None)  # the CSMS is fixed
                sent = csms.mark()
                released = await ipc.release_parked()
            assert released["released"] == [e["id"] for e in listed["parked"]]
            started = await csms.wait_for("TransactionEvent", predicate=lambda r: r.payload["eventType"] == "Started",
                                          since=sent, timeout=10)
            assert started.payload["seqNo"] == 0
            await eventually(lambda: core.store.parked_count() == 0 and core.store.outbox_depth() == 0)
        finally:
            await server.close()
            await rig.stop()


async def test_releasing_an_entry_that_is_not_parked_is_refused(daemon: Daemon, sock_path: Path) -> None:
    async with IpcClient(sock_path) as ipc:
        with pytest.raises(IpcError, match="none of these entries is parked"):
            await ipc.release_parked([12345])


async def test_the_api_lists_parked_messages_and_releases_them_only_with_the_token(
    api: httpx.AsyncClient, daemon: Daemon
) -> None:
    entry_id = park_one(daemon.store)
    listed = (await api.get("/outbox/parked")).json()
    assert [e["id"] for e in listed["parked"]] == [entry_id]
    assert listed["parked"][0]["last_error"].startswith("CALLERROR InternalError")
    assert "TAG-SECRET-9" not in str(listed)
    assert (await api.post("/outbox/parked/release", json={"ids": [entry_id]})).status_code == 401
    answer = await api.post("/outbox/parked/release", json={"ids": [entry_id]}, headers=auth())
    assert answer.status_code == 200 and answer.json() == {"released": [entry_id]}
    assert daemon.store.parked_count() == 0
    assert entry_id in [e.id for e in daemon.store.pending_outbox(100)]  # queued again


async def test_metrics_show_parked_and_held_messages(api: httpx.AsyncClient, daemon: Daemon) -> None:
    daemon.facts["ocpp"] = {**daemon.facts["ocpp"], "parked_messages": 2, "held_messages": 5}
    text = (await api.get("/metrics")).text
    assert "station_outbox_parked 2.0" in text and "station_outbox_held 5.0" in text


async def test_status_flags_parked_and_held_messages_as_problems(api: httpx.AsyncClient, daemon: Daemon) -> None:
    daemon.facts["ocpp"] = {**daemon.facts["ocpp"], "parked_messages": 2, "held_messages": 5}
    answer = await api.get("/status")
    assert answer.status_code == 200, answer.text
    codes = {p["code"]: p["severity"] for p in answer.json()["problems"]}
    assert codes["outbox_parked"] == "warning" and codes["outbox_held"] == "warning"


async def _cli(socket: Path, *args: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OCPP_", "STATION_"))}
    env.update(STATION_ENV_FILE=os.devnull, STATION_IPC_SOCKET=str(socket), OCPP_STATION_NAME="CLI_1",
               OCPP_201_URL="ws://127.0.0.1:9/ocpp/")
    code, out, err = await station_cli(env, "outbox", *args, timeout=30)
    return code, out + err


async def test_the_cli_lists_parked_messages_and_releases_them_all(daemon: Daemon, sock_path: Path) -> None:
    entry_id = park_one(daemon.store)
    code, out = await _cli(sock_path)
    assert code == 0, out
    assert f"#{entry_id}  started" in out and "CSMS database down" in out
    code, out = await _cli(sock_path, "release", "--all")
    assert code == 0, out
    assert f"released 1 parked message(s): {entry_id}" in out
    assert daemon.store.parked_count() == 0


async def test_the_cli_lists_a_parked_message_without_a_transaction_by_its_kind_alone(
    daemon: Daemon, sock_path: Path
) -> None:
    with daemon.store.transaction("seed") as db:
        entry_id = daemon.store.append_message(db, "security_event", Clock(trusted=True).stamp(),
                                               {"type": "SettingSystemTime"})
    daemon.store.retry_outbox(entry_id, "CALLERROR FormatViolation: bad techInfo", 0, park=True)
    code, out = await _cli(sock_path)
    assert code == 0, out
    line = next(line for line in out.splitlines() if line.startswith(f"  #{entry_id} "))
    assert "security_event" in line and "FormatViolation" in line
    assert "transaction" not in line and "seqNo" not in line, line


def test_a_database_from_before_version_binding_gets_the_column_and_keeps_its_transactions(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "old.db"
    with sqlite3.connect(db) as con:  # the transactions table as the first release created it
        con.execute("CREATE TABLE transactions (id TEXT PRIMARY KEY, connector_id INTEGER NOT NULL, id_token TEXT,"
                    " token_type TEXT, remote_start_id INTEGER, started_at TEXT NOT NULL, ended_at TEXT,"
                    " meter_start_wh REAL, meter_stop_wh REAL, stop_reason TEXT, seq_next INTEGER NOT NULL DEFAULT 0,"
                    " csms_id TEXT, charging_state TEXT NOT NULL DEFAULT 'EVConnected')")
        con.execute("INSERT INTO transactions (id, connector_id, started_at, csms_id) VALUES ('old', 1, 'x', '42')")
    store = Store(db)
    [tx] = store.open_transactions()
    assert tx.csms_id == "42" and tx.ocpp_version is None
    store.pin_version("old", "16")
    store.pin_version("old", "201")  # the first binding stays
    assert store.open_transactions()[0].ocpp_version == "16"
    assert store.versions_needed() == {"16": 1}
    store.close()
