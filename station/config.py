"""Station configuration: CLI flag > environment > env file > default.

The env file (`/etc/ocpp_station.env` on devices) and the environment use the
variable names already deployed in the field (`OCPP_*`) plus `STATION_*` ones.
Every setting has exactly one variable name, so `config show` can say where
each value came from.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field as dataclass_field
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from dotenv import dotenv_values
from pydantic import AfterValidator, AliasChoices, Field, SecretStr, ValidationError, create_model, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_ENV_FILE = Path("/etc/ocpp_station.env")
NO_CSMS_URL = "OCPP_201_URL or OCPP_16_URL must be set: the CSMS WebSocket URL"
ENV_FILE_VARIABLE = "STATION_ENV_FILE"


OTHER_VARIABLES = frozenset({ENV_FILE_VARIABLE, "STATION_ROOT", "STATION_PIP", "STATION_PYTHON", "STATION_SMOKE_CMD",
                             "STATION_SOAK", "STATION_CRASH_SEED", "STATION_SCREENSHOT_DIR"})
"""`STATION_*` variables that are not settings but are read by the tools (provisioning, updates) and the tests."""
DEPRECATED_VARIABLES = {
    "STATION_FALLBACK_AFTER": "only a protocol answer switches OCPP versions now; an unreachable CSMS is retried "
                              "on the same version (docs/ocpp.md, version choice)",
}
"""Settings that no longer have an effect, with why: still accepted (deployed env files keep loading),
each one warned about in one line."""
METER_MODELS = ("adl400",)
"""The register maps of station.meter.registers.MAPS (a test keeps the two equal); not imported
from there: pymodbus would cost every start 65 ms."""


def _var(name: str, description: str, **kwargs: Any) -> Any:
    """A field read from exactly one environment variable `name`."""
    return Field(validation_alias=AliasChoices(name), description=description, **kwargs)


def mask_url(url: str) -> str:
    """The URL with any user:password part replaced by ***, for messages (the host stays visible)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return url.replace(parts.netloc, "***@" + parts.netloc.rsplit("@", 1)[1], 1)


def _station_id(value: str) -> str:
    if not value or any(c.isspace() or c in "/?#" for c in value):
        raise ValueError("expected a station id without spaces or / ? #, e.g. ORGE_AC_001")
    return value


def _websocket_url(value: str | None) -> str | None:
    if value in (None, ""):
        return None
    assert value is not None
    if not value.startswith(("ws://", "wss://")):
        raise ValueError("expected a ws:// or wss:// URL")
    if "@" in urlsplit(value).netloc:
        raise ValueError("must not carry a user name or password (user:password@host): "
                         "set the password in OCPP_STATION_PASSWORD")
    return value


def _host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host.strip("[]") or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("expected host:port with a port from 1 to 65535, e.g. 127.0.0.1:8080")
    return value


def _existing_file(value: Path | None) -> Path | None:
    if value is None:
        return None
    if not value.exists():
        raise ValueError("no such file")
    if not value.is_file():
        raise ValueError("not a file")
    return value


def _serial_ports(value: str) -> str:
    if not [p for p in value.split(",") if p.strip()]:
        raise ValueError("expected a serial device (or one per connector, comma-separated), e.g. /dev/esp32")
    return value


StationId = Annotated[str, AfterValidator(_station_id)]
WebSocketUrl = Annotated[str | None, AfterValidator(_websocket_url)]
HostPort = Annotated[str, AfterValidator(_host_port)]
ExistingFile = Annotated[Path | None, AfterValidator(_existing_file)]
SerialPorts = Annotated[str, AfterValidator(_serial_ports)]


# --- station-api's rules (api/*): the token and the host names only the local API reads --------------
MIN_TOKEN_LENGTH = 24
"""A token of 24 URL-safe characters holds ~140 bits (the API's token guard, api/guard.py, counts on it);
the first boot generates 43 (station/field/firstboot.py)."""


def _api_token(value: SecretStr | None) -> SecretStr | None:
    if value is None or not value.get_secret_value():
        return None  # no token: the API's control endpoints are disabled
    secret = value.get_secret_value()
    if len(secret) < MIN_TOKEN_LENGTH:
        raise ValueError(f"too short ({len(secret)} characters): at least {MIN_TOKEN_LENGTH} are needed; "
                         "generate one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))'")
    if any(c.isspace() for c in secret):
        raise ValueError("must not contain spaces")
    return value


def _api_host_names(value: str) -> str:
    names = [n.strip() for n in value.split(",") if n.strip()]
    for name in names:
        if any(c.isspace() or c in "/?#@*" for c in name) or name.count(":") == 1:
            which = f" ({name!r} is not one)" if len(names) > 1 else ""
            raise ValueError(f"expected host names or addresses without port, comma-separated{which}")
    return value


def host_names(value: str) -> list[str]:
    """STATION_API_HOSTS as Host header names: lower case, an IPv6 address in brackets."""
    names = [n.strip().lower() for n in value.split(",") if n.strip()]
    return [f"[{n.strip('[]')}]" if ":" in n else n for n in names]


ApiToken = Annotated[SecretStr | None, AfterValidator(_api_token)]
ApiHostNames = Annotated[str, AfterValidator(_api_host_names)]
# --- end of station-api's rules ------------------------------------------------------------------------


class SettingsBase(BaseSettings):
    """What every settings model shares: the sources' rules and the values derived from settings."""

    model_config = SettingsConfigDict(
        extra="ignore",
        case_sensitive=True,
        populate_by_name=False,
        env_ignore_empty=True,
        validate_default=True,
    )

    @property
    def db_path(self) -> Path:
        return Path(getattr(self, "state_dir")) / "station.db"

    @property
    def api_host(self) -> str:
        return str(getattr(self, "api_bind")).rpartition(":")[0].strip("[]")

    @property
    def api_port(self) -> int:
        return int(str(getattr(self, "api_bind")).rpartition(":")[2])

    def secrets(self) -> list[str]:
        """The secret values in force, for log redaction."""
        values = (getattr(self, name, None) for name in ("station_password", "api_token"))
        return [s.get_secret_value() for s in values if s and s.get_secret_value()]


class Settings(SettingsBase):
    """Everything the daemon, the API and the tools read from configuration."""

    # --- names already used in the field --------------------------------
    station_name: StationId = _var("OCPP_STATION_NAME", "Station id (the CSMS knows the station by it).")
    station_password: SecretStr | None = _var(
        "OCPP_STATION_PASSWORD", "Password for HTTP basic auth (security profiles 1 and 2).", default=None
    )
    ocpp_primary: Literal["201", "16"] = _var(
        "OCPP_PRIMARY", "OCPP version tried first: 201 (2.0.1) or 16 (1.6J).", default="201"
    )
    ocpp_201_url: WebSocketUrl = _var(
        "OCPP_201_URL", "CSMS URL for OCPP 2.0.1; a URL ending in / gets the station id appended.", default=None
    )
    ocpp_16_url: WebSocketUrl = _var(
        "OCPP_16_URL", "CSMS URL for OCPP 1.6J; a URL ending in / gets the station id appended.", default=None
    )
    heartbeat_seconds: int = _var(
        "OCPP_HEARTBEAT_SECONDS",
        "Heartbeat interval until the CSMS sets one in its BootNotification response.",
        default=300,
        ge=1,
        le=86400,
    )

    # --- CSMS link ----------------------------------------------------------
    security_profile: int | None = _var(
        "STATION_SECURITY_PROFILE",
        "OCPP security profile (0 none, 1 basic auth, 2 TLS + basic auth, 3 TLS client cert); "
        "empty = inferred from the URL scheme and the credentials configured.",
        default=None, ge=0, le=3,  # an int, not Literal[0..3]: a Literal of ints refuses the env's text "2"
    )
    ca_bundle: ExistingFile = _var("STATION_CA_BUNDLE", "CA bundle to verify the CSMS (wss://).", default=None)
    client_cert: ExistingFile = _var("STATION_CLIENT_CERT", "Client certificate (profile 3).", default=None)
    client_key: ExistingFile = _var("STATION_CLIENT_KEY", "Client certificate key (profile 3).", default=None)
    manufacturer_roots: ExistingFile = _var(
        "STATION_MANUFACTURER_ROOTS",
        "PEM bundle of firmware manufacturer root certificates, added once to the certificate store "
        "(the CSMS can install more with InstallCertificate).", default=None,
    )
    additional_root_check: bool = _var(
        "STATION_ADDITIONAL_ROOT_CHECK",
        "AdditionalRootCertificateCheck: keep one CSMS root at a time; the CSMS may only install a new one "
        "signed by the one it replaces (kept as fallback until the new one verified the CSMS).", default=False,
    )
    firmware_allow_unsigned: bool = _var(
        "STATION_FIRMWARE_ALLOW_UNSIGNED",
        "Accept OCPP 1.6 UpdateFirmware without signature (checksum only). Development rigs only: "
        "off, an unsigned update is refused and only a signed one chaining to a manufacturer root is installed.",
        default=False,
    )
    log_upload_allow_local: bool = _var(
        "STATION_LOG_UPLOAD_ALLOW_LOCAL",
        "Let GetLog / GetDiagnostics upload to loopback, link-local and the station's own addresses. "
        "Test rigs only: off, such a request is rejected (a CSMS must not reach the station's local services).",
        default=False,
    )
    primary_retry_seconds: float = _var(
        "STATION_PRIMARY_RETRY_SECONDS", "After the CSMS refused the primary OCPP version, how long to stay on the "
        "other one before probing the primary again.",
        default=3600.0, gt=0,
    )
    version_return_seconds: float = _var(
        "STATION_VERSION_RETURN_SECONDS", "How often to try to return to the OCPP version that transaction messages "
        "wait for (docs/ocpp.md, version switches).", default=60.0, gt=0,
    )
    backoff_min_seconds: float = _var("STATION_BACKOFF_MIN_SECONDS", "First reconnect delay.", default=1.0, gt=0)
    backoff_max_seconds: float = _var("STATION_BACKOFF_MAX_SECONDS", "Longest reconnect delay.", default=60.0, gt=0)
    ping_interval_seconds: int = _var(
        "STATION_PING_INTERVAL_SECONDS",
        "WebSocket ping interval until the CSMS sets WebSocketPingInterval (0 = no pings).",
        default=20, ge=0, le=86400,
    )
    ping_timeout_seconds: float = _var(
        "STATION_PING_TIMEOUT_SECONDS", "A pong later than this declares the CSMS link dead.", default=20.0, gt=0
    )

    # --- hardware -----------------------------------------------------------
    esp32_port: SerialPorts = _var("STATION_ESP32_PORT", "Serial device of the ESP32 charge controller.", default="/dev/esp32")
    esp32_baud: int = _var("STATION_ESP32_BAUD", "ESP32 serial speed.", default=115200, gt=0)
    esp32_poll_seconds: float = _var(
        "STATION_ESP32_POLL_SECONDS", "Status request interval to the ESP32.", default=0.25, gt=0
    )
    esp32_link_timeout_seconds: float = _var(
        "STATION_ESP32_LINK_TIMEOUT_SECONDS", "No valid frame for this long = ESP32 link down.", default=3.0, gt=0
    )
    meter_port: str = _var("STATION_METER_PORT", "Serial device of the Modbus meter; empty = no meter.", default="")
    meter_model: Literal["adl400"] = _var(
        "STATION_METER_MODEL", "Register map of the meter (lower case): adl400.", default="adl400")
    meter_unit: int = _var("STATION_METER_UNIT", "Modbus unit id of the meter.", default=1, ge=1, le=247)
    meter_baud: int = _var("STATION_METER_BAUD", "Meter serial speed.", default=9600, gt=0)
    meter_poll_seconds: float = _var("STATION_METER_POLL_SECONDS", "Meter poll interval.", default=1.0, gt=0)
    connectors: int = _var("STATION_CONNECTORS", "Number of connectors (one ESP32 each).", default=1, ge=1, le=8)
    max_current_a: int = _var(
        "STATION_MAX_CURRENT_A", "Hardware current limit per connector, in A (6..32).", default=32, ge=6, le=32
    )
    meter_value_seconds: int = _var(
        "STATION_METER_VALUE_SECONDS", "Meter values sent during a transaction every this many seconds.",
        default=60, ge=1,
    )

    # --- local state and services --------------------------------------------
    state_dir: Path = _var("STATION_STATE_DIR", "Durable state (SQLite).", default=Path("/var/lib/station"))
    ipc_socket: Path = _var(
        "STATION_IPC_SOCKET", "Unix socket of the daemon.", default=Path("/run/station/station.sock")
    )
    api_bind: HostPort = _var(
        "STATION_API_BIND", "host:port of the local API (127.0.0.1 keeps it on the station).",
        default="127.0.0.1:8080",
    )
    api_token: ApiToken = _var(
        "STATION_API_TOKEN", f"Bearer token for the API's control endpoints (at least {MIN_TOKEN_LENGTH} "
        "characters); empty = control endpoints disabled.", default=None
    )
    api_hosts: ApiHostNames = _var(
        "STATION_API_HOSTS", "Host names or addresses (comma-separated) the API answers besides loopback and the "
        "bind address, e.g. the station's LAN address when bound to 0.0.0.0; any other Host header gets 400.",
        default="",
    )
    log_format: Literal["auto", "json", "console"] = _var(
        "STATION_LOG_FORMAT", "auto = console on a terminal, JSON lines otherwise.", default="auto"
    )
    log_level: Literal["debug", "info", "warning", "error"] = _var(
        "STATION_LOG_LEVEL", "Log level.", default="info"
    )
    log_driver_tokens: bool = _var(
        "STATION_LOG_DRIVER_TOKENS", "Show drivers' tokens (idToken / idTag) in log lines, for debugging; masked to "
        "their last 4 characters otherwise. API and IPC answers always mask them.", default=False,
    )
    log_file: Path | None = _var(
        "STATION_LOG_FILE", "Write the daemon's log to this file (kept to 2 x 10 MB) instead of stderr; for hosts "
        "without journald. Diagnostics archives read it.", default=None,
    )
    flight_recorder_mb: int = _var(
        "STATION_FLIGHT_RECORDER_MB", "Disk kept for the flight recorder (raw ESP32, OCPP and meter traffic, "
        "in STATION_STATE_DIR/flight-recorder); 0 = off.", default=16, ge=0, le=1024,
    )

    @model_validator(mode="after")
    def _some_csms_url(self) -> "Settings":
        if not (self.ocpp_201_url or self.ocpp_16_url):
            raise ValueError(NO_CSMS_URL)
        return self

    @model_validator(mode="after")
    def _backoff_range(self) -> "Settings":
        if self.backoff_min_seconds > self.backoff_max_seconds:
            raise ValueError(f"STATION_BACKOFF_MIN_SECONDS ({self.backoff_min_seconds:g}) must not exceed "
                             f"STATION_BACKOFF_MAX_SECONDS ({self.backoff_max_seconds:g})")
        return self

    @model_validator(mode="after")
    def _security_profile_fits(self) -> "Settings":
        """The rules of station.ocpp.connection.resolve_security_profile, said in settings' names: the daemon
        would refuse the same settings later, with a traceback instead of a line naming them."""
        urls = {var: url for var, url in (("OCPP_201_URL", self.ocpp_201_url), ("OCPP_16_URL", self.ocpp_16_url))
                if url}
        if not urls:
            return self
        primary = self.ocpp_201_url if self.ocpp_primary == "201" else self.ocpp_16_url
        primary = primary or next(iter(urls.values()))
        profile, why = self.security_profile, "STATION_SECURITY_PROFILE"
        if profile is None:
            secure = primary.startswith("wss://")
            profile = 3 if secure and self.client_cert else (2 if secure else 1) if self.station_password else 0
            why = f"inferred from the wss:// primary URL and {'STATION_CLIENT_CERT' if profile == 3 else 'the password'}"
        if profile in (1, 2) and not self.station_password:
            raise ValueError(f"STATION_SECURITY_PROFILE={profile} needs OCPP_STATION_PASSWORD")
        if profile == 3 and not (self.client_cert and self.client_key):
            raise ValueError("security profile 3 needs STATION_CLIENT_CERT and STATION_CLIENT_KEY")
        if profile >= 2:
            plain = [var for var, url in urls.items() if not url.startswith("wss://")]
            if plain:
                raise ValueError(f"security profile {profile} ({why}) needs wss:// on every CSMS URL, "
                                 f"the fallback's too: {' and '.join(plain)} {'is' if len(plain) == 1 else 'are'} ws://")
        return self


def variable_of(field_name: str) -> str:
    alias = Settings.model_fields[field_name].validation_alias
    assert isinstance(alias, AliasChoices)
    return str(alias.choices[0])


FIELD_BY_VARIABLE = {variable_of(name): name for name in Settings.model_fields}
SECRET_FIELDS = frozenset({"station_password", "api_token"})
URL_FIELDS = frozenset({"ocpp_201_url", "ocpp_16_url"})
API_ONLY_VARIABLES = frozenset({"STATION_API_BIND", "STATION_API_TOKEN", "STATION_API_HOSTS"})
"""Read by station-api alone: their mistakes stop it (exit 78) and are only warnings for the daemon."""
API_FIELDS = ("ipc_socket", "api_bind", "api_token", "api_hosts", "log_format", "log_level", "log_driver_tokens")
"""What `station-api` reads: it needs neither the station id nor a CSMS URL (load_api)."""


CSMS_URL_VARIABLES = ("OCPP_201_URL", "OCPP_16_URL")
"""At least one of them must be set: a missing CSMS URL is marked on both."""


@dataclass(frozen=True)
class RawConfig:
    """What was given, before validation: `config show` and `status` need it when validation fails."""

    values: dict[str, str]
    """Field name → raw value from the highest-precedence source that gave one."""
    sources: dict[str, str]
    """Field name → 'cli', 'env', 'file:PATH' or 'default'."""
    env_file: Path | None
    warnings: list[str] = dataclass_field(default_factory=list)
    """One line per unknown OCPP_*/STATION_* variable, naming the nearest known one."""


class ConfigError(Exception):
    """Configuration that cannot be used; the message is one line per problem, secrets masked.

    `problems` maps a variable (None: a rule across variables) to its lines; `raw` holds what was
    given when the values could be read (None when the env file itself is the problem).
    """

    exit_code = 78  # EX_CONFIG

    def __init__(self, message: str, *, problems: dict[str | None, list[str]] | None = None,
                 reasons: dict[str, str] | None = None, raw: RawConfig | None = None) -> None:
        super().__init__(message)
        self.problems = problems or {}
        self.reasons = reasons or {}
        """Variable → short reason ('MISSING', 'INVALID: ...') for `config show`'s marks."""
        self.raw = raw


@dataclass(frozen=True)
class LoadedConfig:
    settings: Settings
    sources: dict[str, str]
    """Field name → where its value came from: 'cli', 'env', 'file:PATH' or 'default'."""
    env_file: Path | None
    warnings: list[str] = dataclass_field(default_factory=list)
    """One line per unknown OCPP_*/STATION_* variable, naming the nearest known one."""


def _mask(field_name: str, value: Any) -> str:
    if field_name in SECRET_FIELDS:
        return "'***'" if value not in (None, "") else "''"
    if field_name in URL_FIELDS and isinstance(value, str):
        value = mask_url(value)
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "...'"


def _read_env_file(path: Path, required: bool) -> dict[str, str]:
    if not path.exists():
        if required:
            raise ConfigError(f"config error: env file {path} does not exist")
        return {}
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config error: env file {path} cannot be read: {exc.__class__.__name__}") from None
    import io

    from dotenv.parser import parse_stream

    # dotenv skips a line it cannot parse with a warning; a station would then run without it
    # (say, a password line with a stray quote). The line number only: its text may be a secret.
    broken = [b.original.line for b in parse_stream(io.StringIO(raw)) if b.error]
    if broken:
        raise ConfigError(f"config error: env file {path} line {broken[0]} is not KEY=value "
                          "(quote a value that has spaces, # or quotes in it, and close every quote)")
    values = dotenv_values(stream=io.StringIO(raw))
    return {k: v for k, v in values.items() if v is not None}


def _env_file_path(env_file: Path | str | None) -> tuple[Path, bool]:
    required = env_file is not None or bool(os.environ.get(ENV_FILE_VARIABLE))
    return Path(env_file or os.environ.get(ENV_FILE_VARIABLE) or DEFAULT_ENV_FILE), required


def unknown_variables(names: Iterable[str], where: str) -> list[str]:
    """A warning per OCPP_*/STATION_* name that no setting reads (a typo is otherwise silently ignored)."""
    names = list(names)
    deprecated = [f"config warning: {n} in {where} no longer has an effect: {DEPRECATED_VARIABLES[n]}; remove it"
                  for n in sorted(n for n in names if n in DEPRECATED_VARIABLES)]
    unknown = sorted(n for n in names if n.startswith(("OCPP_", "STATION_")) and n not in FIELD_BY_VARIABLE
                     and n not in OTHER_VARIABLES and n not in DEPRECATED_VARIABLES)
    if not unknown:
        return deprecated
    import difflib  # only when a name is unknown: not on every start

    known = sorted({*FIELD_BY_VARIABLE, *OTHER_VARIABLES})
    lines = []
    for name in unknown:
        near = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hint = f"did you mean {near[0]}?" if near else "`station config show` lists the settings"
        lines.append(f"config warning: unknown setting {name} in {where} is ignored; {hint}")
    return deprecated + lines


def read_raw(cli: dict[str, Any] | None = None, env_file: Path | str | None = None) -> RawConfig:
    """The values given, with their sources, without validating them (raises ConfigError for the env file only)."""
    path, required = _env_file_path(env_file)
    file_values = _read_env_file(path, required)
    warnings = unknown_variables(os.environ, "the environment") + unknown_variables(file_values, str(path))
    overrides = {variable_of(k): v for k, v in (cli or {}).items() if v is not None}
    values: dict[str, str] = {}
    sources: dict[str, str] = {}
    for name in Settings.model_fields:
        var = variable_of(name)
        if var in overrides:
            values[name], sources[name] = str(overrides[var]), "cli"
        elif os.environ.get(var):
            values[name], sources[name] = os.environ[var], "env"
        elif file_values.get(var):
            values[name], sources[name] = file_values[var], f"file:{path}"
        else:
            sources[name] = "default"
    return RawConfig(values=values, sources=sources, env_file=path if file_values else None, warnings=warnings)


def _subset(names: tuple[str, ...]) -> type[SettingsBase]:
    """A settings model with only the fields `names` (their types, ranges and rules), for a program
    that reads no more than these: it must not be refused for a setting it never uses."""
    fields: dict[str, Any] = {name: (Settings.model_fields[name].annotation, Settings.model_fields[name])
                              for name in names}
    return create_model("SubsetSettings", __base__=SettingsBase, **fields)


def load(cli: dict[str, Any] | None = None, env_file: Path | str | None = None, *,
         only: tuple[str, ...] | None = None) -> LoadedConfig:
    """Build the settings: CLI overrides (field name → value) > environment > env file > default.

    This is the one validation of every setting (types, ranges, the meter models, files that must
    exist, the rules across settings) for `station run`, `--once`, `config show` and `station-api`;
    every problem is one `config error:` line naming the variable and the rule, secrets masked.
    `only`: validate just these fields (and none of the rules across the others).

    `env_file` None means `$STATION_ENV_FILE` or /etc/ocpp_station.env, which may be
    absent; a file named explicitly must exist.
    """
    raw = read_raw(cli, env_file)
    overrides = {variable_of(k): v for k, v in (cli or {}).items() if v is not None}
    model: type[SettingsBase] = Settings if only is None else _subset(only)
    try:
        settings = model(_env_file=raw.env_file, **overrides)  # type: ignore[call-arg]
    except ValidationError as exc:
        problems, reasons = _problems(exc, {variable_of(k): v for k, v in raw.values.items()})
        if only is None and problems and all(var in API_ONLY_VARIABLES for var in problems):
            # A mistake in a setting only station-api reads stops station-api (load_api), never the
            # charging daemon: a short API token must not take a station off the road after an update.
            lenient = {**overrides, **{var: Settings.model_fields[FIELD_BY_VARIABLE[var]].default
                                       for var in problems}}
            settings = model(_env_file=raw.env_file, **lenient)  # type: ignore[call-arg]
            notes = [line.replace("config error:", "config warning:", 1) + " (station-api refuses to start "
                     "until this is fixed; the daemon runs without it)" for lines in problems.values() for line in lines]
            return LoadedConfig(settings=settings, sources=raw.sources, env_file=raw.env_file,  # type: ignore[arg-type]
                                warnings=[*raw.warnings, *notes])
        if (only is None and not any(raw.values.get(FIELD_BY_VARIABLE[v]) for v in CSMS_URL_VARIABLES)
                and None not in problems):
            # pydantic checks this rule only once every field is valid: say it now, with the others.
            problems[None] = [f"config error: {NO_CSMS_URL}"]
        message = "\n".join(line for lines in problems.values() for line in lines)
        raise ConfigError(message, problems=problems, reasons=reasons, raw=raw) from None
    return LoadedConfig(settings=settings, sources=raw.sources, env_file=raw.env_file,  # type: ignore[arg-type]
                        warnings=raw.warnings)


def load_api(cli: dict[str, Any] | None = None, env_file: Path | str | None = None) -> LoadedConfig:
    """`station-api`'s settings (API_FIELDS only), its unknown-variable warnings written to stderr.

    Raises ConfigError (exit 78, `str(error)` is the lines to print) as `load` does.
    """
    import sys

    try:
        loaded = load(cli, env_file, only=API_FIELDS)
    except ConfigError as exc:
        for line in exc.raw.warnings if exc.raw else []:
            print(line, file=sys.stderr)
        raise
    for line in loaded.warnings:
        print(line, file=sys.stderr)
    return loaded


def setting(name: str, cli: dict[str, Any] | None = None, env_file: Path | str | None = None) -> Any:
    """One setting without validating the others (`station status` needs only the IPC socket)."""
    from pydantic import TypeAdapter

    raw = read_raw(cli, env_file)
    field = Settings.model_fields[name]
    if name not in raw.values:
        return field.default
    try:
        return TypeAdapter(field.annotation).validate_python(raw.values[name])
    except ValidationError as exc:
        var = variable_of(name)
        raise ConfigError(f"config error: {var}={_mask(name, raw.values[name])}: "
                          f"{exc.errors()[0]['msg']}", raw=raw) from None


def _problems(exc: ValidationError, merged: dict[str, Any]) -> tuple[dict[str | None, list[str]], dict[str, str]]:
    problems: dict[str | None, list[str]] = {}
    reasons: dict[str, str] = {}
    for err in exc.errors(include_url=False, include_input=False):
        message = str(err["msg"]).removeprefix("Value error, ")
        if not err["loc"]:
            # A rule across settings: its message names them; `config show` marks each one.
            problems.setdefault(None, []).append(f"config error: {message}")
            for var in FIELD_BY_VARIABLE if message != NO_CSMS_URL else ():
                if var in message:
                    reasons.setdefault(var, f"INVALID: {message}")
            continue
        var = str(err["loc"][0])
        field = FIELD_BY_VARIABLE.get(var, var)
        if err["type"] == "missing":
            line = f"config error: {var} is missing: {Settings.model_fields[field].description}"
            reasons.setdefault(var, "MISSING")
        else:
            line = f"config error: {var}={_mask(field, merged.get(var))}: {message}"
            reasons.setdefault(var, f"INVALID: {message}")
        problems.setdefault(var, []).append(line)
    return problems, reasons


def describe(loaded: LoadedConfig) -> list[dict[str, Any]]:
    """Rows for `station config show`: variable, effective value (secrets masked), source."""
    rows = []
    for name, field in Settings.model_fields.items():
        value = getattr(loaded.settings, name)
        if isinstance(value, SecretStr):
            shown = "***" if value.get_secret_value() else ""
        elif value is None:
            shown = ""
        else:
            shown = str(value)
        rows.append({"variable": variable_of(name), "value": shown, "source": loaded.sources[name],
                     "description": field.description or "", "problem": None})
    return rows


def describe_invalid(error: ConfigError) -> list[dict[str, Any]]:
    """Rows for `config show` when the configuration does not validate: every setting, as given
    (secrets masked), each missing or invalid one with its problem."""
    assert error.raw is not None
    raw = error.raw
    urls_missing = not any(raw.values.get(FIELD_BY_VARIABLE[v]) for v in CSMS_URL_VARIABLES)
    rows = []
    for name, field in Settings.model_fields.items():
        var = variable_of(name)
        if name in raw.values:
            shown = "***" if name in SECRET_FIELDS else mask_url(raw.values[name]) if name in URL_FIELDS \
                else raw.values[name]
        else:
            shown = "" if field.is_required() or field.default is None else str(field.default)
        problem = error.reasons.get(var)
        if problem is None and var in CSMS_URL_VARIABLES and urls_missing:
            problem = f"MISSING (set {' or '.join(CSMS_URL_VARIABLES)})"
        rows.append({"variable": var, "value": shown, "source": raw.sources[name],
                     "description": field.description or "", "problem": problem})
    return rows
