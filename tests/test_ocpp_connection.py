"""The connection manager: URL rule, version fallback and return, reconnect, auth, backoff."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from station.devtools.csms import DevCsms
from station.devtools.demo import free_port
from station.devtools.linkemu import LinkEmulator
from station.ocpp.connection import (
    FailureKind,
    LinkConfigError,
    LinkParams,
    OcppLink,
    backoff_delay,
    endpoint_url,
    public_url,
    resolve_security_profile,
)
from tests.ocpp_helpers import booting_session, eventually

FAST = {"backoff_min": 0.01, "backoff_max": 0.05, "open_timeout": 2}



@pytest.fixture
async def running() -> AsyncIterator[Callable[[OcppLink], Awaitable[OcppLink]]]:
    """Start links as tasks and cancel them at the end of the test."""
    tasks: list[asyncio.Task[None]] = []

    async def start(link: OcppLink) -> OcppLink:
        tasks.append(asyncio.create_task(link.run()))
        return link

    yield start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def test_url_ending_in_slash_gets_the_station_id_appended() -> None:
    assert endpoint_url("ws://csms/ocpp/", "ORGE_AC_001") == "ws://csms/ocpp/ORGE_AC_001"


def test_url_not_ending_in_slash_is_used_as_given() -> None:
    assert endpoint_url("wss://csms/ocpp/ORGE_AC_001", "ORGE_AC_001") == "wss://csms/ocpp/ORGE_AC_001"


def test_public_url_strips_credentials() -> None:
    assert public_url("wss://cp:pw@host:443/ocpp/CP") == "wss://host:443/ocpp/CP"


def test_backoff_is_bounded_jittered_and_never_zero() -> None:
    assert backoff_delay(0, 1, 60, rng=lambda: 0.0) == 1
    assert backoff_delay(0, 1, 60, rng=lambda: 1.0) == 2
    assert backoff_delay(50, 1, 60, rng=lambda: 1.0) == 60
    assert backoff_delay(50, 1, 60, rng=lambda: 0.0) == 1


def test_default_ping_settings_detect_a_dead_path_within_a_minute() -> None:
    params = LinkParams("CP", url_201="ws://x/")
    assert params.ping_interval + params.ping_timeout < 60


async def test_connects_with_2_0_1_and_exposes_state(running: Any) -> None:
    async with DevCsms() as csms:
        link = await running(OcppLink(LinkParams("CP", url_201=csms.url("201"), url_16=csms.url("16"), **FAST), booting_session("CP")))
        await csms.wait_for("BootNotification", station_id="CP")
        await eventually(lambda: link.state.connected)
        assert link.state.version == "201" and csms.version_of("CP") == "201"
        assert link.state.url == csms.url("201", "CP")
        await eventually(lambda: link.state.last_received_at is not None)


async def test_primary_16_connects_with_1_6(running: Any) -> None:
    async with DevCsms() as csms:
        await running(OcppLink(LinkParams("CP", primary="16", url_201=csms.url("201"), url_16=csms.url("16"), **FAST), booting_session("CP")))
        boot = await csms.wait_for("BootNotification", station_id="CP")
        assert boot.version == "16"


async def test_falls_back_to_1_6_when_2_0_1_is_refused_and_returns_after_retry_period(running: Any) -> None:
    async with DevCsms(accept_subprotocols=("ocpp1.6",)) as csms:
        sessions: list[str] = []
        params = LinkParams("CP", url_201=csms.url("201"), url_16=csms.url("16"), primary_retry_seconds=0.5, **FAST)
        link = await running(OcppLink(params, booting_session("CP", sessions)))
        await csms.wait_for("BootNotification", predicate=lambda r: r.version == "16")
        assert link.state.preferred_version == "16"
        csms.accept_subprotocols = ("ocpp2.0.1", "ocpp1.6")
        await csms.wait_for("BootNotification", predicate=lambda r: r.version == "201")
        await eventually(lambda: link.state.connected and link.state.version == "201")
        await eventually(lambda: sessions[-1] == "201")
        assert sessions[0] == "16"


async def test_failed_probe_of_primary_returns_to_the_fallback(running: Any) -> None:
    async with DevCsms(accept_subprotocols=("ocpp1.6",)) as csms:
        params = LinkParams("CP", url_201=csms.url("201"), url_16=csms.url("16"), primary_retry_seconds=0.2, **FAST)
        link = await running(OcppLink(params, booting_session("CP")))
        first = await csms.wait_for("BootNotification", predicate=lambda r: r.version == "16")
        index = csms.received.index(first) + 1
        await csms.wait_for("BootNotification", predicate=lambda r: r.version == "16", since=index)
        assert link.state.preferred_version == "16"
        assert link.state.failed_attempts >= 2  # the first refusal and at least one failed probe


async def test_an_unreachable_primary_is_retried_on_its_version_and_never_switched(running: Any) -> None:
    dead = f"ws://127.0.0.1:{free_port()}/ocpp/"
    async with DevCsms() as csms:
        params = LinkParams("CP", url_201=dead, url_16=csms.url("16"), **FAST)
        link = await running(OcppLink(params, booting_session("CP")))
        await eventually(lambda: link.state.failed_attempts >= 8)
        assert csms.received == []  # a refused connection says nothing about the CSMS's versions
        assert link.state.preferred_version == "201" and link.state.last_error_kind is FailureKind.UNREACHABLE


async def test_the_link_starts_with_the_version_last_accepted_on_the_endpoint(running: Any) -> None:
    async with DevCsms() as csms:
        sessions: list[str] = []
        params = LinkParams("CP", url_201=csms.url("201"), url_16=csms.url("16"), start_version="16", **FAST)
        link = await running(OcppLink(params, booting_session("CP", sessions)))
        await eventually(lambda: sessions == ["16"])
        assert [r.version for r in csms.calls("BootNotification")] == ["16"]
        assert link.state.preferred_version == "16"


async def test_a_csms_that_closes_before_any_http_answer_keeps_the_link_on_one_version(running: Any) -> None:
    """A CSMS whose front end accepts TCP while the application is down (restart, overload)."""
    paths: list[str] = []

    async def down(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readline()
        paths.append(line.decode().split(" ")[1])
        writer.close()

    server = await asyncio.start_server(down, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        base = f"ws://127.0.0.1:{port}"
        params = LinkParams("CP", url_201=f"{base}/ocpp201/", url_16=f"{base}/ocpp16/", **FAST)
        link = await running(OcppLink(params, booting_session("CP")))
        await eventually(lambda: len(paths) >= 8)
        assert set(paths) == {"/ocpp201/CP"}
        assert link.state.last_error_kind is FailureKind.UNREACHABLE
    finally:
        server.close()


async def test_connects_that_time_out_in_a_black_holed_link_keep_the_version_until_the_link_is_back(running: Any) -> None:
    async with DevCsms() as csms, LinkEmulator(csms.port) as emu:
        fast = {**FAST, "open_timeout": 0.3}
        params = LinkParams("CP", url_201=emu.url(csms.url("201")), url_16=emu.url(csms.url("16")), **fast)
        states: list[tuple[str | None, FailureKind | None]] = []
        link = await running(OcppLink(params, booting_session("CP"),
                                      on_state=lambda s: states.append((s.preferred_version, s.last_error_kind))))
        await csms.wait_for("BootNotification")
        emu.black_hole()
        emu.cut()
        await eventually(lambda: link.state.failed_attempts >= 7, timeout=20)
        emu.restore()
        await eventually(lambda: link.state.connected, timeout=20)
        assert FailureKind.UNREACHABLE in {kind for _, kind in states}  # the connects timed out
        assert {version for version, _ in states} == {"201"}  # and every attempt offered 2.0.1
        assert link.state.version == "201"


async def test_reconnects_after_the_server_dies_and_comes_back_on_the_same_port(running: Any) -> None:
    csms = await DevCsms().start()
    port = csms.port
    link = await running(OcppLink(LinkParams("CP", url_201=csms.url("201"), **FAST), booting_session("CP")))
    await csms.wait_for("BootNotification")
    await csms.stop()
    await eventually(lambda: not link.state.connected)
    await eventually(lambda: link.state.failed_attempts >= 2)
    assert link.state.last_error_kind is FailureKind.UNREACHABLE
    async with DevCsms(port=port) as again:
        await again.wait_for("BootNotification", station_id="CP")
        await eventually(lambda: link.state.connected)
        assert link.state.reconnects == 1


async def test_reconnects_after_the_csms_drops_the_connection(running: Any) -> None:
    async with DevCsms() as csms:
        link = await running(OcppLink(LinkParams("CP", url_201=csms.url("201"), **FAST), booting_session("CP")))
        await csms.wait_for("BootNotification")
        mark = csms.mark()
        await csms.disconnect("CP", abort=True)
        await csms.wait_for("BootNotification", since=mark)
        assert link.state.connects == 2


async def test_basic_auth_succeeds_with_the_right_password(running: Any) -> None:
    async with DevCsms(passwords={"CP": "s3cret"}) as csms:
        link = await running(OcppLink(LinkParams("CP", password="s3cret", url_201=csms.url("201"), **FAST), booting_session("CP")))
        await csms.wait_for("BootNotification", station_id="CP")
        assert link.profile == 1


async def test_wrong_password_is_an_auth_failure_not_unreachable_and_no_fallback(running: Any) -> None:
    async with DevCsms(passwords={"CP": "s3cret"}) as csms:
        params = LinkParams("CP", password="wrong", url_201=csms.url("201"), url_16=csms.url("16"), **FAST)
        link = await running(OcppLink(params, booting_session("CP")))
        await eventually(lambda: len(csms.auth_failures) >= 3)
        assert link.state.last_error_kind is FailureKind.AUTH_FAILED
        assert "401" in (link.state.last_error or "")
        assert link.state.preferred_version == "201"
        assert "wrong" not in repr(params) and "wrong" not in str(link.state.as_dict())


async def test_no_password_is_sent_when_profile_0_is_chosen(running: Any) -> None:
    async with DevCsms(passwords={"CP": "s3cret"}) as csms:
        params = LinkParams("CP", password="s3cret", security_profile=0, url_201=csms.url("201"), **FAST)
        link = await running(OcppLink(params, booting_session("CP")))
        await eventually(lambda: link.state.last_error_kind is FailureKind.AUTH_FAILED)


def test_profile_is_inferred_from_scheme_and_credentials() -> None:
    assert resolve_security_profile(LinkParams("CP", url_201="ws://h/")) == 0
    assert resolve_security_profile(LinkParams("CP", password="p", url_201="ws://h/")) == 1
    assert resolve_security_profile(LinkParams("CP", password="p", url_201="wss://h/")) == 2
    assert resolve_security_profile(LinkParams("CP", client_cert="c", client_key="k", url_201="wss://h/")) == 3


def test_tls_profiles_refuse_a_plain_ws_fallback_url() -> None:
    with pytest.raises(LinkConfigError, match="wss://"):
        resolve_security_profile(LinkParams("CP", password="p", url_201="wss://h/", url_16="ws://h/"))


def test_explicit_profile_needs_its_credentials() -> None:
    with pytest.raises(LinkConfigError, match="password"):
        resolve_security_profile(LinkParams("CP", security_profile=2, url_201="wss://h/"))
    with pytest.raises(LinkConfigError, match="client certificate"):
        resolve_security_profile(LinkParams("CP", security_profile=3, url_201="wss://h/"))


def test_credentials_in_the_url_are_refused() -> None:
    with pytest.raises(LinkConfigError, match="credentials"):
        resolve_security_profile(LinkParams("CP", url_201="ws://cp:pw@h/"))


# --------------------------------------------------------------------------- liveness (WebSocketPingInterval)

async def test_a_black_holed_connection_is_reset_within_ping_interval_plus_timeout(running: Any) -> None:
    from station.devtools.linkemu import LinkEmulator

    async with DevCsms() as csms, LinkEmulator(csms.port) as path:
        params = LinkParams("CP", url_201=path.url(csms.url("201")), ping_interval=0.5, ping_timeout=0.5, **FAST)
        link = await running(OcppLink(params, booting_session("CP")))
        await eventually(lambda: link.state.connected, 10)
        path.black_hole()
        lost = await path.wait_event("client_closed", since=path.black_holed_at or 0, timeout=10)
        # interval + timeout = 1 s; websockets' own keepalive would add its 5 s close timeout
        assert path.black_holed_at is not None and lost.at - path.black_holed_at <= 1.0 + 1.0
        await eventually(lambda: not link.state.connected, 5)
        assert link.state.last_error == "ping timeout (no pong within 0.5 s)"


async def test_the_station_reconnects_once_a_black_hole_ends(running: Any) -> None:
    from station.devtools.linkemu import LinkEmulator

    async with DevCsms() as csms, LinkEmulator(csms.port) as path:
        sessions: list[str] = []
        params = LinkParams("CP", url_201=path.url(csms.url("201")), ping_interval=0.3, ping_timeout=0.3, **FAST)
        link = await running(OcppLink(params, booting_session("CP", sessions)))
        await eventually(lambda: sessions == ["201"], 10)
        path.black_hole()
        await eventually(lambda: not link.state.connected, 5)
        await asyncio.sleep(0.5)  # reconnect attempts into the black hole do not complete
        assert sessions == ["201"]
        path.restore()
        await eventually(lambda: len(sessions) == 2 and link.state.connected, 10)


async def test_a_ping_interval_of_zero_sends_no_pings_and_a_new_interval_applies_at_once(running: Any) -> None:
    from station.devtools.linkemu import LinkEmulator

    async with DevCsms() as csms, LinkEmulator(csms.port) as path:
        params = LinkParams("CP", url_201=path.url(csms.url("201")), ping_interval=0, ping_timeout=0.3, **FAST)
        link = await running(OcppLink(params, booting_session("CP")))
        await eventually(lambda: link.state.connected, 10)
        path.black_hole()
        await asyncio.sleep(1.0)
        assert link.state.connected  # no pings: nothing notices the dead path
        link.set_ping_interval(0.2)
        await eventually(lambda: not link.state.connected, 5)


def test_failed_returns_to_the_version_work_waits_for_back_off_up_to_the_primary_retry_period() -> None:
    from station.ocpp.connection import FailureKind, _Failure

    now = [1000.0]
    params = LinkParams("CP", url_201="ws://127.0.0.1:9/ocpp/", url_16="ws://127.0.0.1:9/ocpp16/",
                        version_return_seconds=60, primary_retry_seconds=3600)
    link = OcppLink(params, booting_session("CP"), monotonic=lambda: now[0], needs=lambda: {"16": 1})
    waits = []
    for _ in range(8):
        link._record_failure("16", "probe", _Failure(FailureKind.REFUSED, "HTTP 400 on upgrade"))
        waits.append(link._next_return - now[0])
    assert waits == [60, 120, 240, 480, 960, 1920, 3600, 3600]
