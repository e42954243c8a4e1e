"""The settings `station-api` uses, and only those: it never needs the station's name or a CSMS URL.

Read like the daemon's (CLI flag > environment > env file > default, the same variable names),
validated at start; a problem is one line naming the variable and the rule, secrets never shown,
and the process exits 78 (EX_CONFIG: systemd does not restart it, see systemd/station-api.service).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

DEFAULT_ENV_FILE = Path("/etc/ocpp_station.env")
ENV_FILE_VARIABLE = "STATION_ENV_FILE"
MIN_TOKEN_LENGTH = 24
"""A token of 24 URL-safe characters holds ~140 bits; the first boot generates 43 (station/field/firstboot.py)."""
CONFIG_EXIT = 78


class ApiConfigError(Exception):
    """One line naming the variable and the rule; never the secret value."""

    exit_code = CONFIG_EXIT


class ApiSettings(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=False)

    ipc_socket: Path = Field(Path("/run/station/station.sock"), alias="STATION_IPC_SOCKET")
    api_bind: str = Field("127.0.0.1:8080", alias="STATION_API_BIND")
    api_token: SecretStr | None = Field(None, alias="STATION_API_TOKEN")
    api_hosts: str = Field("", alias="STATION_API_HOSTS")
    """Host names (comma-separated) answered besides loopback and the bind name, e.g. the station's
    LAN address when bound to 0.0.0.0; any other Host header is refused (DNS rebinding)."""
    log_format: Literal["auto", "json", "console"] = Field("auto", alias="STATION_LOG_FORMAT")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", alias="STATION_LOG_LEVEL")
    log_driver_tokens: bool = Field(False, alias="STATION_LOG_DRIVER_TOKENS")

    @field_validator("api_bind")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host.strip("[]") or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("expected host:port, e.g. 127.0.0.1:8080")
        return value

    @field_validator("api_hosts")
    @classmethod
    def _host_names(cls, value: str) -> str:
        for name in filter(None, (n.strip() for n in value.split(","))):
            if any(c.isspace() or c in "/?#@*" for c in name) or name.count(":") == 1:
                raise ValueError(f"{name!r}: expected host names or addresses without port, comma-separated")
        return value

    @field_validator("api_token")
    @classmethod
    def _long_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None  # no token: control endpoints disabled
        secret = value.get_secret_value()
        if len(secret) < MIN_TOKEN_LENGTH:
            raise ValueError(f"too short ({len(secret)} characters): at least {MIN_TOKEN_LENGTH} are needed; "
                             "generate one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))'")
        if any(c.isspace() for c in secret):
            raise ValueError("must not contain spaces")
        return value

    @property
    def api_host(self) -> str:
        return self.api_bind.rpartition(":")[0].strip("[]")

    @property
    def api_port(self) -> int:
        return int(self.api_bind.rpartition(":")[2])

    @property
    def extra_hosts(self) -> list[str]:
        names = [n.strip().lower() for n in self.api_hosts.split(",") if n.strip()]
        return [f"[{n.strip('[]')}]" if ":" in n else n for n in names]

    def secrets(self) -> list[str]:
        return [self.api_token.get_secret_value()] if self.api_token else []

    @classmethod
    def variables(cls) -> list[str]:
        return [str(f.alias) for f in cls.model_fields.values()]


def _env_file(path: Path, required: bool) -> dict[str, str]:
    from dotenv import dotenv_values
    from dotenv.parser import parse_stream

    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if required:
            raise ApiConfigError(f"config error: env file {path} does not exist") from None
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ApiConfigError(f"config error: env file {path} cannot be read: {exc.__class__.__name__}") from None
    broken = [b.original.line for b in parse_stream(io.StringIO(raw)) if b.error]
    if broken:  # the line number only: its text may be a secret
        raise ApiConfigError(f"config error: env file {path} line {broken[0]} is not KEY=value "
                             "(quote a value that has spaces, # or quotes in it)")
    return {k: v for k, v in dotenv_values(stream=io.StringIO(raw)).items() if v}


def load(cli: dict[str, Any] | None = None, env_file: Path | None = None,
         environ: dict[str, str] | None = None) -> ApiSettings:
    """CLI (variable → value) > environment > env file > default; ApiConfigError on the first problem."""
    environ = dict(os.environ) if environ is None else environ
    required = env_file is not None or bool(environ.get(ENV_FILE_VARIABLE))
    path = Path(env_file or environ.get(ENV_FILE_VARIABLE) or DEFAULT_ENV_FILE)
    file_values = _env_file(path, required)
    values: dict[str, Any] = {}
    for var in ApiSettings.variables():
        given = (cli or {}).get(var)
        if given is not None:
            values[var] = str(given)
        elif environ.get(var):
            values[var] = environ[var]
        elif file_values.get(var):
            values[var] = file_values[var]
    try:
        return ApiSettings(**values)
    except ValidationError as exc:
        err = exc.errors(include_url=False, include_input=False)[0]
        var = str(err["loc"][0]) if err["loc"] else "configuration"
        shown = "'***'" if var == "STATION_API_TOKEN" else repr(values.get(var))
        message = str(err["msg"]).removeprefix("Value error, ")
        raise ApiConfigError(f"config error: {var}={shown}: {message}") from None
