"""`make interop`'s CitrineOS part (station/devtools/interop.py): the REST calls it makes, its skip
when no CitrineOS answers, and (slow) the whole scenario through a CitrineOS-shaped REST API."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from station.devtools.csms import DevCsms
from station.devtools.interop import STATION_ID, CitrineOperator, ScenarioFailed, citrine_backend, citrine_part, run_version

Handler = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


async def rest_server(handle: Handler) -> asyncio.Server:
    """A loopback HTTP/1.1 server answering each POST with `handle(path with query, JSON body)`."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        length = int(next(line.split(":")[1] for line in head.split("\r\n") if line.lower().startswith("content-length")))
        answer = json.dumps(await handle(head.split(" ")[1], json.loads(await reader.readexactly(length)))).encode()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                     % (len(answer), answer))
        await writer.drain()
        writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0)


def url_of(server: asyncio.Server) -> str:
    return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def test_interop_drives_citrineos_through_its_versioned_message_endpoints() -> None:
    requests: list[tuple[str, dict[str, Any]]] = []

    async def handle(path: str, body: dict[str, Any]) -> dict[str, Any]:
        requests.append((path, body))
        return {"success": True}

    server = await rest_server(handle)
    try:
        operator = CitrineOperator(url_of(server) + "/")
        start = {"idToken": {"idToken": "T", "type": "Central"}, "remoteStartId": 1, "evseId": 1}
        assert (await operator.call("201", "RequestStartTransaction", start))["status"] == "Accepted"
        await operator.call("16", "ChangeConfiguration", {"key": "MeterValueSampleInterval", "value": "5"})
    finally:
        server.close()
        await server.wait_closed()
    assert requests == [
        (f"/ocpp/2.0.1/evdriver/requestStartTransaction?identifier={STATION_ID}&tenantId=1", start),
        (f"/ocpp/1.6/configuration/changeConfiguration?identifier={STATION_ID}&tenantId=1",
         {"key": "MeterValueSampleInterval", "value": "5"}),
    ]


async def test_interop_reports_a_citrineos_that_did_not_send_the_call_as_a_failure() -> None:
    async def handle(path: str, body: dict[str, Any]) -> dict[str, Any]:
        return {"success": False, "payload": "station not connected"}

    server = await rest_server(handle)
    try:
        with pytest.raises(ScenarioFailed, match="did not send Reset"):
            await CitrineOperator(url_of(server)).call("201", "Reset", {"type": "Immediate"})
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("configured", [None, "closed port"])
async def test_interop_skips_citrineos_when_citrineos_url_names_none_that_answers(
        configured: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("CITRINEOS_URL", raising=False)
    if configured:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        monkeypatch.setenv("CITRINEOS_URL", f"http://127.0.0.1:{port}")
    assert await citrine_part(["201", "16"], tmp_path) == []
    assert "CitrineOS: not reachable at CITRINEOS_URL (skipped)" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("version", ["201", "16"])
async def test_interop_scenario_passes_through_a_citrineos_shaped_rest_api(tmp_path: Path, version: str) -> None:
    """The CitrineOS code path end to end: REST calls relayed to a real dev CSMS, checks on the station's side."""
    async with DevCsms(heartbeat_interval=10) as csms:

        async def relay(path: str, body: dict[str, Any]) -> dict[str, Any]:
            action = path.split("?")[0].rsplit("/", 1)[1]
            await csms.call(STATION_ID, action[0].upper() + action[1:], body)
            return {"success": True}

        server = await rest_server(relay)
        try:
            results = await run_version(version, citrine_backend(url_of(server), csms.url(version)), tmp_path)
        finally:
            server.close()
            await server.wait_closed()
    assert [r.scenario for r in results if r.result == "FAIL"] == [], results
    assert [r.scenario for r in results if r.result == "SKIP"] == ["status after the dropped first one"]
