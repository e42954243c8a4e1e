"""Which OCPP version the station speaks through real outages (issue 22, defect 2).

Only a protocol answer switches versions; the version a CSMS endpoint accepted last is remembered
in the station's SQLite store and offered first, across restarts and outages.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from ocpp.exceptions import NotImplementedError as OcppNotImplemented

from station.core.model import MeterReading
from station.devtools.csms import DevCsms, Received
from station.core.store import Store
from tests.ocpp_helpers import Rig, eventually

VERSIONS = ["201", "16"]
OTHER = {"201": "16", "16": "201"}


def remembered(db: Path, port: int) -> str | None:
    """The version the station remembers for the dev CSMS on `port` (both of its endpoints)."""
    store = Store(db)
    try:
        key = f"ocpp:accepted_version:ws://127.0.0.1:{port}/ocpp201/|ws://127.0.0.1:{port}/ocpp16/"
        return store.get(key)
    finally:
        store.close()


async def test_a_boot_refused_as_not_implemented_switches_to_the_other_version(tmp_path: Path) -> None:
    def not_here(received: Received) -> dict[str, object]:
        if received.version == "201":
            raise OcppNotImplemented(description="this CSMS speaks OCPP 1.6 only")
        return {"status": "Accepted", "currentTime": "2026-01-01T00:00:00Z", "interval": 300}

    async with DevCsms() as csms:
        csms.override("BootNotification", not_here)
        rig = await Rig("201", csms, tmp_path / "station.db").start()
        try:
            await csms.wait_for("StatusNotification", predicate=lambda r: r.version == "16", timeout=10)
            assert [r.version for r in csms.calls("BootNotification")] == ["201", "16"]
            assert rig.client is not None and rig.client.link.state.version == "16"
        finally:
            await rig.stop()
    assert remembered(tmp_path / "station.db", csms.port) == "16"


@pytest.mark.parametrize("version", VERSIONS)
async def test_a_restarted_station_offers_the_version_its_csms_accepted_last(version: str, tmp_path: Path) -> None:
    db = tmp_path / "station.db"
    async with DevCsms(accept_subprotocols=(f"ocpp{'1.6' if version == '201' else '2.0.1'}",)) as csms:
        rig = await Rig(version, csms, db).start()
        await csms.wait_for("StatusNotification", timeout=10)  # the primary was refused: on the other version
        await rig.stop()
        csms.accept_subprotocols = ("ocpp2.0.1", "ocpp1.6")  # both offered now: the station keeps what worked
        mark = csms.mark()
        rig = await Rig(version, csms, db).start()
        try:
            await csms.wait_for("StatusNotification", since=mark, timeout=10)
            assert {r.version for r in csms.received[mark:]} == {OTHER[version]}
        finally:
            await rig.stop()


@pytest.mark.parametrize("version", VERSIONS)
async def test_an_outage_mid_session_keeps_one_version_and_the_offline_events_go_out_on_the_first_connection_back(
        version: str, tmp_path: Path) -> None:
    first = await DevCsms().start()
    port = first.port
    rig = await Rig(version, first, tmp_path / "station.db").start()
    assert rig.core is not None and rig.esp is not None and rig.client is not None
    core, link = rig.core, rig.client.link
    paths: list[str] = []

    async def down(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """The CSMS's front end during its outage: accepts TCP, closes before any HTTP answer."""
        line = await reader.readline()
        if line:
            paths.append(line.decode().split(" ")[1])
        writer.close()

    try:
        await first.wait_for("StatusNotification", timeout=10)
        core.on_meter_reading(MeterReading(1000.0))
        core.request_start(1, "TAG1", "ISO14443", trigger="Authorized")
        rig.esp.plug()
        await rig.wait_outbox_empty()
        await first.stop()
        await eventually(lambda: not core.csms_online)
        outage = await asyncio.start_server(down, "127.0.0.1", port)
        core.on_meter_reading(MeterReading(1500.0))
        core.request_stop(connector_id=1, reason="Local", trigger="StopAuthorized")
        await eventually(lambda: len(paths) >= 8)  # many failed connects: formerly a switch after 3
        outage.close()
        await outage.wait_closed()
        assert set(paths) == {f"/ocpp{version}/CP"}
        connects = link.state.connects
        async with DevCsms(port=port) as back:
            await rig.wait_outbox_empty(timeout=15)
            assert {r.version for r in back.received} == {version}
            assert back.calls("BootNotification") == []  # same process, same version: no second boot
            assert link.state.connects == connects + 1  # the first connection back carried the offline events
            ended = back.calls("TransactionEvent" if version == "201" else "StopTransaction")
            assert ended and (version == "16" or ended[-1].payload.get("offline") is True)
    finally:
        await rig.stop()
