"""`station-api`: the local state service under uvicorn, bound to STATION_API_BIND (127.0.0.1 by default)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import uvicorn

from station import __version__, logs
from station.config import ConfigError, load_api


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="station-api", description=(__doc__ or "").replace("`", ""))
    parser.add_argument("--env-file", type=Path, help="configuration file (default $STATION_ENV_FILE or "
                        "/etc/ocpp_station.env)")
    parser.add_argument("--bind", help="host:port, overrides STATION_API_BIND")
    parser.add_argument("--ipc-socket", type=Path, help="daemon socket, overrides STATION_IPC_SOCKET")
    parser.add_argument("--version", action="version", version=__version__)
    args = parser.parse_args(argv)
    try:
        loaded = load_api({"api_bind": args.bind, "ipc_socket": args.ipc_socket}, args.env_file)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return ConfigError.exit_code
    settings = loaded.settings
    logs.register_secrets(settings.secrets())
    logs.configure(settings.log_format, settings.log_level, driver_tokens=settings.log_driver_tokens)

    from api.app import create_app

    if settings.api_host not in ("127.0.0.1", "::1", "localhost"):
        import structlog

        structlog.get_logger("api").warning(
            "API bound beyond loopback by configuration", bind=settings.api_bind,
            control_enabled=settings.api_token is not None)
    config = uvicorn.Config(create_app(settings), host=settings.api_host, port=settings.api_port,
                            log_config=None, access_log=False, proxy_headers=False, server_header=False,
                            timeout_graceful_shutdown=3)
    uvicorn.Server(config).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
