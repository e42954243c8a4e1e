"""What `station-api` reads of the configuration: a typed view, no rules of its own.

station.config validates every setting, the API's too, in one pass (`load_api`: only the settings
the API uses, so it needs neither the station id nor a CSMS URL): CLI flag > environment > env file
> default, one `config error:` line per problem naming the variable and the rule, secrets masked,
exit 78 (EX_CONFIG: systemd does not restart it, see systemd/station-api.service).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, cast

from pydantic import SecretStr

from station.config import ConfigError, load_api

__all__ = ["ApiSettings", "ConfigError", "load"]


class ApiSettings(Protocol):
    """The fields of station.config.API_FIELDS and the values derived from them (station.config.SettingsBase)."""

    @property
    def ipc_socket(self) -> Path: ...
    @property
    def api_bind(self) -> str: ...
    @property
    def api_token(self) -> SecretStr | None: ...
    @property
    def api_hosts(self) -> str: ...
    @property
    def log_format(self) -> str: ...
    @property
    def log_level(self) -> str: ...
    @property
    def log_driver_tokens(self) -> bool: ...
    @property
    def api_host(self) -> str: ...
    @property
    def api_port(self) -> int: ...
    def secrets(self) -> list[str]: ...


def load(cli: dict[str, Any] | None = None, env_file: Path | str | None = None) -> ApiSettings:
    """station.config.load_api's settings (CLI keys are field names, e.g. `api_bind`); ConfigError on a problem."""
    return cast(ApiSettings, load_api(cli, env_file).settings)
