"""`station`: the command a technician types. Every failure ends in one readable line and an exit code."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from station import __version__, exitcodes
from station.cliargs import Parser
from station.config import (
    SECRET_FIELDS,
    ConfigError,
    LoadedConfig,
    Settings,
    describe,
    describe_invalid,
    load,
    setting,
    variable_of,
)

EPILOG = """\
configuration: flags override environment variables, which override the env file
(/etc/ocpp_station.env, or --env-file PATH). `station config show` prints the effective
values and where each came from. Secrets (OCPP_STATION_PASSWORD, STATION_API_TOKEN) are
only read from the environment or the env file, never from flags.

exit codes:
""" + "\n".join(f"  {code:>3}  {text}" for code, text in sorted(exitcodes.DESCRIPTIONS.items()))


def _settings_flags() -> argparse.ArgumentParser:
    """Parent parser: one --flag per non-secret setting, named after the setting."""
    parent = Parser(add_help=False)
    group = parent.add_argument_group("settings (override environment and env file)")
    for name, field in Settings.model_fields.items():
        if name in SECRET_FIELDS:
            continue
        group.add_argument(
            f"--{name.replace('_', '-')}",
            dest=f"setting_{name}",
            metavar=variable_of(name),
            help=field.description,
            default=argparse.SUPPRESS,  # absent: a subcommand must not reset a flag given before it
        )
    return parent


def build_parser() -> argparse.ArgumentParser:
    settings_flags = _settings_flags()
    common = Parser(add_help=False)
    common.add_argument("--env-file", type=Path, default=argparse.SUPPRESS,
                        help="env file to read (default /etc/ocpp_station.env)")

    parser = Parser(
        prog="station",
        usage="station [--env-file PATH] [SETTINGS FLAGS] {--once [--timeout S] | COMMAND ...}",
        description="EV charge point station daemon: OCPP 2.0.1/1.6J to the CSMS, ESP32 charge controller, "
        "Modbus energy meter.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common, settings_flags],
    )
    parser.add_argument("--version", action="version", version=f"station {__version__}")
    parser.add_argument(
        "--once", action="store_true",
        help="smoke test: check config, CSMS (Boot/Status/Heartbeat), ESP32, clock and disk; print one JSON "
        "report on stdout; exit 0 only when healthy (see exit codes below)",
    )
    parser.add_argument("--timeout", type=float, default=15.0, help="--once: total time limit in seconds (15)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", prog="station")

    sub.add_parser("run", parents=[common, settings_flags], help="run the station daemon (what systemd starts)",
                   description="Run the station daemon until SIGTERM.")
    status = sub.add_parser("status", parents=[common, settings_flags], help="show the running daemon's state",
                            description="Ask the running daemon (over its IPC socket) for its state.")
    status.add_argument("--json", action="store_true", help="print JSON instead of a summary")

    outbox = sub.add_parser("outbox", parents=[common, settings_flags],
                            help="show parked messages (transaction, security and monitoring events), or "
                                 "release them to be sent again",
                            description="Queued messages (transaction events, security events, NotifyEvent) the CSMS "
                            "refused `TransactionMessageAttempts` times are parked: kept, not sent again. `station outbox` lists them; `station outbox release "
                            "ID ...` (or `--all`) sends them again with fresh attempts.")
    outbox.add_argument("--json", action="store_true", help="print JSON instead of a summary")
    outbox_sub = outbox.add_subparsers(dest="outbox_command", metavar="ACTION")
    release = outbox_sub.add_parser("release", parents=[common, settings_flags], help="send parked messages again")
    release.add_argument("ids", nargs="*", type=int, metavar="ID", help="entry ids (from `station outbox`)")
    release.add_argument("--all", action="store_true", help="release every parked message")
    report = sub.add_parser("report", parents=[common, settings_flags],
                            help="write a diagnostics archive (logs, config, state, flight recorder) for a technician",
                            description="Write the same archive GetLog uploads: the station's log lines, its "
                            "configuration (secrets masked), a state snapshot and the flight recorder. Works with or "
                            "without the daemon running.")
    from station.diagnostics.report import add_arguments

    add_arguments(report)

    config = sub.add_parser("config", help="configuration tools")
    config_sub = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    show = config_sub.add_parser("show", parents=[common, settings_flags],
                                 help="print the effective configuration, secrets masked, with sources")
    show.add_argument("--json", action="store_true", help="print JSON")

    demo = sub.add_parser("demo", help="run CSMS, simulators, station and API together with a scripted session",
                          description="Start the development CSMS, the ESP32 and meter simulators, the station "
                          "and the API as separate processes and play a charging session. "
                          "DEMO_SECONDS=N ends it after N seconds.")
    demo.add_argument("--ocpp", choices=["201", "16"], default=None, help="OCPP version (default: OCPP_PRIMARY or 201)")
    demo.add_argument("--seconds", type=float, default=None, help="stop after this many seconds (DEMO_SECONDS)")
    from station.cliargs import port

    demo.add_argument("--api-port", type=port, default=None,
                      help="the API's port on 127.0.0.1 (0 = any free one; default 8080 when free, else any free one)")

    sub.add_parser("dev-csms", help="run the development CSMS (2.0.1 and 1.6 on one port); `dev-csms call` sends a connected station any CALL", add_help=False)
    sub.add_parser("loadtest", help="simulate N stations against a CSMS (backend sizing)", add_help=False)
    sim = sub.add_parser("sim", help="hardware simulators on pseudo-terminals")
    sim_sub = sim.add_subparsers(dest="sim_command", metavar="DEVICE", required=True)
    sim_sub.add_parser("esp32", help="ESP32 charge controller + EV simulator", add_help=False)
    sim_sub.add_parser("meter", help="Modbus RTU energy meter simulator", add_help=False)
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {k.removeprefix("setting_"): v for k, v in vars(args).items() if k.startswith("setting_") and v is not None}


def load_config(args: argparse.Namespace) -> LoadedConfig:
    """The validated settings (ConfigError otherwise); unknown OCPP_*/STATION_* variables warned about on stderr."""
    try:
        loaded = load(_overrides(args), getattr(args, "env_file", None))
    except ConfigError as exc:
        _warn(exc.raw.warnings if exc.raw else [])
        raise
    _warn(loaded.warnings)
    return loaded


def _warn(lines: list[str]) -> None:
    for line in lines:
        print(line, file=sys.stderr)


def _setup_logging(settings: Settings | None, *, stream: Any = None) -> None:
    from station import logs

    if settings is not None:
        logs.register_secrets(settings.secrets())
        logs.configure(settings.log_format, settings.log_level, stream=stream, driver_tokens=settings.log_driver_tokens)
    else:
        logs.configure("auto", "info", stream=stream)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Tools with their own argument parsers get the rest of the command line untouched.
    try:
        delegated = _delegate(argv)
    except KeyboardInterrupt:  # Ctrl-C while a tool was still starting
        return 130
    if delegated is not None:
        return delegated
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.once:
            from station.once import run_once

            return run_once(args)
        if args.command == "run":
            return _run(args)
        if args.command == "status":
            return _status(args)
        if args.command == "outbox":
            return _outbox(args)
        if args.command == "config":
            return _config_show(args)
        if args.command == "report":
            return _report(args)
        if args.command == "demo":
            from station.devtools.demo import run_demo

            return run_demo(args)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return exitcodes.CONFIG
    except KeyboardInterrupt:
        return 130
    parser.print_help()
    return exitcodes.USAGE


def _delegate(argv: list[str]) -> int | None:
    if argv[:1] == ["dev-csms"]:
        from station.devtools import csms

        return csms.main(argv[1:])
    if argv[:1] == ["loadtest"]:
        from station.devtools import loadtest

        return loadtest.main(argv[1:])
    if argv[:2] == ["sim", "esp32"]:
        from station.controller import simulator

        return simulator.main(argv[2:])
    if argv[:2] == ["sim", "meter"]:
        from station.meter import simulator as meter_simulator

        return meter_simulator.main(argv[2:])
    return None


def _run(args: argparse.Namespace) -> int:
    loaded = load_config(args)
    from station import handover

    # The daemon runs in a fresh interpreter without the configuration libraries (~14 MB less
    # resident memory); exec_daemon returns only when that is impossible, then it runs here.
    handover.exec_daemon(loaded.settings)
    return handover.run_daemon(loaded.settings)


def _report(args: argparse.Namespace) -> int:
    from station.diagnostics import report

    loaded = load_config(args)
    values = {row["variable"]: row["value"] for row in describe(loaded)}
    return report.run(args, loaded.settings, values)


def _config_show(args: argparse.Namespace) -> int:
    """Every setting, with its source; missing and invalid ones marked. Exit 78 only after showing them all:
    this is the command a technician runs to find out what is missing."""
    try:
        loaded = load_config(args)
        rows, env_file, error = describe(loaded), loaded.env_file, None
    except ConfigError as exc:
        if exc.raw is None:  # the env file itself cannot be read: nothing to show
            raise
        rows, env_file, error = describe_invalid(exc), exc.raw.env_file, exc
    if args.json:
        print(json.dumps({"env_file": str(env_file) if env_file else None, "ok": error is None,
                          "errors": str(error).splitlines() if error else [], "settings": rows}, indent=2))
    else:
        print(f"# env file: {env_file or '(none found)'}")
        width = max(len(r["variable"]) for r in rows)
        for r in rows:
            value = r["value"] if r["value"] or not r["problem"] else "(not set)"
            mark = f"  <-- {r['problem']}" if r["problem"] else ""
            print(f"{r['variable']:<{width}}  {value:<40}  ({r['source']}){mark}")
    if error is not None:
        print(str(error), file=sys.stderr)
        return exitcodes.CONFIG
    return exitcodes.OK


def _status(args: argparse.Namespace) -> int:
    from station.ipc.client import DaemonUnavailable, IpcClient

    socket_path = _ipc_socket(args)

    async def fetch() -> dict[str, Any]:
        async with IpcClient(socket_path) as client:
            return await client.status()

    try:
        status = asyncio.run(fetch())
    except DaemonUnavailable as exc:
        print(f"station daemon not reachable: {exc}", file=sys.stderr)
        return exitcodes.DAEMON_UNAVAILABLE
    if args.json:
        print(json.dumps(status, indent=2, default=str))
        return exitcodes.OK
    from station.once import METER_HINT, describe_waiting, esp32_problem, meter_check

    ocpp = status.get("ocpp", {})
    print(f"station {status.get('station_id')}  software {status.get('software_version')}")
    version = {"201": "2.0.1", "16": "1.6J"}.get(ocpp.get("version") or "", "-")
    error, error_url = ocpp.get("last_error"), ocpp.get("last_error_url")
    where = f" at {error_url}" if error and error_url and error_url != ocpp.get("url") else ""
    print(f"CSMS: {'connected' if ocpp.get('connected') else 'NOT connected'}  OCPP {version}  "
          f"{ocpp.get('url') or ''}  {f'last error{where}: {error}' if error else ''}".rstrip())
    depth, kinds = status.get("outbox_depth"), status.get("outbox_by_kind") or {}
    waiting = f" ({describe_waiting(kinds)})" if depth and sum(kinds.values()) == depth else ""
    print(f"offline queue: {depth}{waiting}   parked: {ocpp.get('parked_messages')}   "
          f"waiting for the other OCPP version: {ocpp.get('held_messages') or 0}   "
          f"clock trusted: {status.get('clock', {}).get('trusted')}")
    meter = status.get("meter") or {}
    if meter.get("port"):
        health = status.get("meter_health") or {}
        fresh = meter_check(meter)  # the daemon waits for 3 failed polls: a reading that is too old says it sooner
        if not health.get("healthy", True):
            state = f"NOT answering since {health.get('since')} ({health.get('reason')}); {METER_HINT}"
        elif not fresh["ok"]:
            state = f"NOT answering: {fresh['detail'].split(': ', 1)[-1]}"
        else:
            state = "answering"
        print(f"meter {meter.get('model')} on {meter['port']}: {state}")
    links = status.get("esp32") or {}
    for c in status.get("connectors", []):
        tx = c.get("transaction")
        link = c["controller_link"]
        print(f"connector {c['id']}: {c['status']}  pilot {c.get('pilot')}  ESP32 link "
              f"{'up' if link['up'] else 'DOWN'}" + (f"  transaction {tx['id']}" if tx else "")
              + (f"  reservation {r['id']} until {r['expires_at']}" if (r := c.get("reservation")) else ""))
        if not link["up"]:
            port = (links.get(str(c["id"])) or {}).get("port")
            print(f"  {esp32_problem(port, link['reason'], link.get('since'), _esp32_baud(args))}")
    return exitcodes.OK


def _esp32_baud(args: argparse.Namespace) -> int | None:
    try:
        return int(setting("esp32_baud", _overrides(args), getattr(args, "env_file", None)))
    except ConfigError:
        return None


def _ipc_socket(args: argparse.Namespace) -> Path:
    """The daemon's socket, and nothing else from the configuration: commands that only ask the
    daemon (`status`, `outbox`) work while the CSMS settings are missing."""
    from station.config import read_raw

    _warn(read_raw(_overrides(args), getattr(args, "env_file", None)).warnings)  # a misspelt STATION_IPC_SOCKET
    return Path(setting("ipc_socket", _overrides(args), getattr(args, "env_file", None)))


def _outbox(args: argparse.Namespace) -> int:
    from station.ipc.client import DaemonUnavailable, IpcClient
    from station.ipc.protocol import IpcError

    socket_path = _ipc_socket(args)
    releasing = getattr(args, "outbox_command", None) == "release"
    if releasing and not args.ids and not args.all:
        print("station outbox release: give entry ids or --all", file=sys.stderr)
        return exitcodes.USAGE

    async def ask() -> dict[str, Any]:
        async with IpcClient(socket_path) as client:
            if releasing:
                return await client.release_parked(None if args.all else list(args.ids))
            return await client.outbox()

    try:
        answer = asyncio.run(ask())
    except DaemonUnavailable as exc:
        print(f"station daemon not reachable: {exc}", file=sys.stderr)
        return exitcodes.DAEMON_UNAVAILABLE
    except IpcError as exc:
        print(f"station outbox: {exc.message}", file=sys.stderr)
        return exitcodes.USAGE
    if getattr(args, "json", False):
        print(json.dumps(answer, indent=2, default=str))
    elif releasing:
        print(f"released {len(answer['released'])} parked message(s): {' '.join(map(str, answer['released']))}")
    else:
        print(f"queued: {answer['depth']}   parked: {len(answer['parked'])}")
        for e in answer["parked"]:
            # Security events, NotifyEvent, ... share the outbox: they have no transaction nor seqNo.
            tx = f"seqNo {e['seq_no']:<4} transaction {e['transaction_id']}  " if e["transaction_id"] else ""
            print(f"  #{e['id']}  {e['kind']:<8} {tx}attempts {e['attempts']}  {e['last_error'] or ''}")
    return exitcodes.OK
