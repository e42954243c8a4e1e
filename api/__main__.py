"""`station-api`: the local state service under uvicorn, bound to STATION_API_BIND (127.0.0.1 by default).

Exit codes: 0 stopped (SIGTERM/SIGINT), 2 bad command line, 69 cannot listen on the address
(port taken by another program, address not on this machine), 78 configuration invalid (one
`config error:` line per problem, as `station` says them: station.config validates).
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from station import __version__, exitcodes


class StopRequest:
    """SIGTERM/SIGINT, from the start of `main` on: a stop asked for ends the process with exit 0.

    While the server runs, uvicorn's own handler stops it and at the end raises the signal again for
    the handler that was there before: this one, instead of the default, which would end the process
    killed by the signal (143/130, a failure for a shell, a supervisor or a test). A signal that comes
    before the server runs (settings, imports, the app) is remembered: the server stops as it starts.
    """

    def __init__(self) -> None:
        self.signals: list[int] = []
        self.server: Any = None  # the uvicorn.Server once there is one

    def __call__(self, number: int, _frame: FrameType | None) -> None:
        self.signals.append(number)
        if self.server is not None:
            self.server.should_exit = True


def main(argv: Sequence[str] | None = None) -> int:
    stop = StopRequest()
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return run(argv, stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run(argv: Sequence[str] | None, stop: StopRequest) -> int:
    import uvicorn  # after the signal handlers: a stop during these imports is a stop too

    from api import serving
    from api.settings import ConfigError, load
    from station import logs

    parser = argparse.ArgumentParser(prog="station-api", description=(__doc__ or "").replace("`", ""),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env-file", type=Path, help="configuration file (default $STATION_ENV_FILE or "
                        "/etc/ocpp_station.env)")
    parser.add_argument("--bind", help="host:port, overrides STATION_API_BIND")
    parser.add_argument("--ipc-socket", type=Path, help="daemon socket, overrides STATION_IPC_SOCKET")
    parser.add_argument("--version", action="version", version=__version__)
    args = parser.parse_args(argv)
    try:
        settings = load({"api_bind": args.bind, "ipc_socket": args.ipc_socket}, args.env_file)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return ConfigError.exit_code
    try:
        sock = serving.listening_socket(settings.api_host, settings.api_port)
    except OSError as exc:
        print(f"station-api: cannot listen on {settings.api_bind}: {exc.strerror or exc} "
              "(another program has the port, or the address is not this machine's; "
              "set STATION_API_BIND or --bind)", file=sys.stderr)
        return exitcodes.CANNOT_LISTEN  # systemd restarts it: the port may be freed
    logs.register_secrets(settings.secrets())
    logs.configure(settings.log_format, settings.log_level, driver_tokens=settings.log_driver_tokens)
    descriptors = serving.raise_descriptor_limit()
    cap = serving.connection_cap(descriptors)

    import structlog

    from api.app import create_app

    log = structlog.get_logger("api")
    if settings.api_host not in ("127.0.0.1", "::1", "localhost"):
        log.warning("API bound beyond loopback by configuration", bind=settings.api_bind,
                    control_enabled=settings.api_token is not None)
    log.info("listening", bind=settings.api_bind, max_connections=cap, descriptor_limit=descriptors,
             header_seconds=serving.HEADER_SECONDS)
    config = uvicorn.Config(create_app(settings), log_config=None, access_log=False, proxy_headers=False,
                            server_header=False, timeout_graceful_shutdown=3, timeout_keep_alive=5,
                            http=serving.protocol_class(cap), h11_max_incomplete_event_size=serving.MAX_HEADER_BYTES)
    server = uvicorn.Server(config)
    stop.server = server
    server.should_exit = bool(stop.signals)  # a stop asked for while starting: start and stop at once
    server.run(sockets=[sock])
    log.info("stopped", signal=signal.Signals(stop.signals[0]).name if stop.signals else None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
