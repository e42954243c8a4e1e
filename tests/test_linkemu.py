"""The link emulator (station/devtools/linkemu.py): a TCP proxy that delays, stalls and black-holes, never reorders.

Real sockets on loopback: an echo server behind the proxy, a client in front. Delays are only
checked as lower bounds (a loaded machine can make them longer, never shorter).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from station.devtools.linkemu import LinkEmulator, LinkProfile


@contextlib.asynccontextmanager
async def echo_server() -> AsyncIterator[tuple[int, list[asyncio.StreamWriter], asyncio.Event]]:
    """Echoes every byte back; echoes EOF as EOF. Yields (port, server-side writers, 'a connection ended')."""
    writers: list[asyncio.StreamWriter] = []
    ended = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.write_eof()
        except (ConnectionError, OSError):
            pass
        finally:
            ended.set()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], writers, ended
    finally:
        server.close()
        for w in writers:
            w.transport.abort()


async def read_exactly(reader: asyncio.StreamReader, n: int, timeout: float = 10) -> bytes:
    async with asyncio.timeout(timeout):
        return await reader.readexactly(n)


async def test_bytes_arrive_intact_and_in_order_under_heavy_jitter() -> None:
    async with echo_server() as (port, _, _), LinkEmulator(port, LinkProfile(delay_s=0.005, jitter_s=0.005), seed=1) as link:
        reader, writer = await asyncio.open_connection("127.0.0.1", link.port)
        sent = b"".join(f"<{i:05d}>".encode() for i in range(300))
        for i in range(300):
            writer.write(sent[i * 7:(i + 1) * 7])
            await writer.drain()
            if i % 10 == 0:
                await asyncio.sleep(0.001)  # separate chunks, each with its own jitter draw
        assert await read_exactly(reader, len(sent)) == sent
        writer.close()


async def test_a_round_trip_takes_at_least_twice_the_one_way_delay() -> None:
    async with echo_server() as (port, _, _), LinkEmulator(port, LinkProfile.rtt(120)) as link:
        reader, writer = await asyncio.open_connection("127.0.0.1", link.port)
        for _ in range(3):
            started = time.monotonic()
            writer.write(b"ping")
            await read_exactly(reader, 4)
            assert time.monotonic() - started >= 0.12
        writer.close()


async def test_bandwidth_spreads_a_large_write_over_its_transmission_time() -> None:
    async with echo_server() as (port, _, _), LinkEmulator(port, LinkProfile(bandwidth_bps=400_000)) as link:
        reader, writer = await asyncio.open_connection("127.0.0.1", link.port)
        started = time.monotonic()
        payload = bytes(10_000)  # 80,000 bits at 400 kbit/s: 0.2 s each way
        writer.write(payload)
        assert await read_exactly(reader, len(payload)) == payload
        assert time.monotonic() - started >= 0.2
        writer.close()


async def test_a_stall_holds_both_directions_then_delivers_everything_in_order() -> None:
    async with echo_server() as (port, _, _), LinkEmulator(port) as link:
        reader, writer = await asyncio.open_connection("127.0.0.1", link.port)
        writer.write(b"before")
        assert await read_exactly(reader, 6) == b"before"
        link.stall(0.3)
        started = time.monotonic()
        writer.write(b"during")
        assert await read_exactly(reader, 6) == b"during"
        assert time.monotonic() - started >= 0.29
        writer.close()


async def test_loss_bursts_stall_the_chunk_they_hit() -> None:
    profile = LinkProfile(loss_rate=1.0, loss_stall_s=0.15)
    async with echo_server() as (port, _, _), LinkEmulator(port, profile, seed=3) as link:
        reader, writer = await asyncio.open_connection("127.0.0.1", link.port)
        started = time.monotonic()
        writer.write(b"x")
        assert await read_exactly(reader, 1) == b"x"
        assert time.monotonic() - started >= 0.3  # one burst each way
        writer.close()


async def test_a_black_hole_forwards_nothing_and_closes_nothing_until_restored() -> None:
    async with echo_server() as (port, _, ended), LinkEmulator(port) as link:
        reader, writer = await asyncio.open_connection("127.0.0.1", link.port)
        writer.write(b"a")
        assert await read_exactly(reader, 1) == b"a"
        link.black_hole()
        writer.write(b"held")
        await asyncio.sleep(0.3)
        assert not reader.at_eof() and len(reader._buffer) == 0  # noqa: SLF001 — nothing came back
        assert not ended.is_set() and link.connections == 1
        link.restore()
        assert await read_exactly(reader, 4) == b"held"
        writer.close()


async def test_a_connection_opened_inside_a_black_hole_reaches_the_server_only_after_restore() -> None:
    async with echo_server() as (port, server_writers, _), LinkEmulator(port) as link:
        link.black_hole()
        reader, writer = await asyncio.open_connection("127.0.0.1", link.port)
        writer.write(b"hello")
        await asyncio.sleep(0.3)
        assert server_writers == []
        link.restore()
        assert await read_exactly(reader, 5) == b"hello"
        writer.close()


async def test_a_reset_inside_a_black_hole_reaches_the_server_after_restore() -> None:
    async with echo_server() as (port, _, ended), LinkEmulator(port) as link:
        reader, writer = await asyncio.open_connection("127.0.0.1", link.port)
        writer.write(b"a")
        await read_exactly(reader, 1)
        link.black_hole()
        writer.transport.abort()
        await link.wait_event("client_closed", timeout=5)  # the proxy saw it, the server must not yet
        await asyncio.sleep(0.2)
        assert not ended.is_set()
        link.restore()
        async with asyncio.timeout(5):
            await ended.wait()


async def test_a_cut_ends_the_connection_at_both_ends() -> None:
    async with echo_server() as (port, _, ended), LinkEmulator(port) as link:
        reader, writer = await asyncio.open_connection("127.0.0.1", link.port)
        writer.write(b"a")
        await read_exactly(reader, 1)
        link.cut()
        async with asyncio.timeout(5):
            await ended.wait()
            with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
                await reader.readexactly(1)
        writer.close()


async def test_a_half_close_follows_the_bytes_before_it() -> None:
    async with echo_server() as (port, _, _), LinkEmulator(port, LinkProfile.rtt(40)) as link:
        reader, writer = await asyncio.open_connection("127.0.0.1", link.port)
        writer.write(b"last words")
        writer.write_eof()
        async with asyncio.timeout(5):
            assert await reader.read() == b"last words"  # then EOF, echoed back
        writer.close()


def test_url_points_a_csms_url_at_the_proxy() -> None:
    link = LinkEmulator(9000, port=9001)
    assert link.url("ws://127.0.0.1:9000/ocpp201/") == "ws://127.0.0.1:9001/ocpp201/"
