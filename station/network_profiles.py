"""CSMS endpoints as numbered network connection profiles (OCPP 2.0.1 B09/B10), shared by the
daemon (SetNetworkProfile, NetworkConfigurationPriority, fallback at connect) and by the root-side
``station-migrate-csms`` tool: one file, one set of rules, one place where fallback happens.

Slots: 0 is the installation's own endpoint — the URLs of ``/etc/ocpp_station.env``
(``OCPP_201_URL`` / ``OCPP_16_URL``) — and cannot be overwritten over OCPP; slots 1..3 are set by
``SetNetworkProfile`` or by ``station-migrate-csms``. ``priority`` is the order the daemon
tries them in after a (re)start (B10.FR.04); each gets ``attempts`` connection attempts
(B10.FR.03, ``NetworkProfileConnectionAttempts``); when all failed it falls back to the profile
that last worked and keeps reconnecting to it (B10.FR.07/09). A changed priority takes effect at
the next start of the daemon (the CSMS follows it with a Reset).

The state lives in ``STATION_STATE_DIR/network-profiles.json`` (0600; no password: profiles use
the station's configured password or certificate), and every switch, fallback and acceptance is
appended to ``network-profiles.jsonl`` beside it, which ``station report`` archives and
``station-migrate-csms`` reads. No OCPP, no pydantic: the root-side tool imports this module.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from station.storage import safefile

FILE_NAME = "network-profiles.json"
HISTORY_NAME = "network-profiles.jsonl"
SLOTS = (0, 1, 2, 3)
"""NetworkConfigurationPriority's valuesList."""
CONFIGURED_SLOT = 0
DEFAULT_ATTEMPTS = 3
MAX_FILE_BYTES = 256 * 1024
HISTORY_TAIL_BYTES = 1024 * 1024
VERSIONS = {"OCPP20": "201", "OCPP16": "16"}
"""2.0.1 OCPPVersionEnumType → this station's version names (OCPP12/15 have no JSON transport)."""


@dataclass(frozen=True)
class NetworkProfile:
    """One way to reach a CSMS. ``url`` as the CSMS gave it (without the station id: ``endpoint``
    appends it, ``/`` first where needed)."""

    slot: int
    url: str
    version: str = "201"
    security_profile: int = 1
    message_timeout_s: int = 30
    source: str = "csms"

    def endpoint(self, station_id: str) -> str:
        """The WebSocket URL. From the CSMS: ocppCsmsUrl + "/" + identity (B09). From the env file or
        ``station-migrate-csms``: the station's URL rule (the identity appended only after a "/")."""
        if self.source in ("config", "migrate"):
            return self.url + station_id if self.url.endswith("/") else self.url
        return (self.url if self.url.endswith("/") else self.url + "/") + station_id

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ProfileState:
    profiles: dict[int, NetworkProfile] = field(default_factory=dict)
    priority: list[int] = field(default_factory=lambda: [CONFIGURED_SLOT])
    last_good: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"profiles": {str(k): v.to_json() for k, v in sorted(self.profiles.items())},
                "priority": list(self.priority), "last_good": self.last_good}


def priority_text(priority: list[int]) -> str:
    return ",".join(str(s) for s in priority)


def parse_priority(text: str, known: set[int]) -> list[int]:
    """NetworkConfigurationPriority's value ("1,0"); ValueError for an unknown slot, a repeat or nothing."""
    try:
        slots = [int(part) for part in text.replace(" ", "").split(",") if part != ""]
    except ValueError:
        raise ValueError("expected slot numbers separated by commas, e.g. 1,0") from None
    if not slots:
        raise ValueError("at least one slot")
    if len(set(slots)) != len(slots):
        raise ValueError("a slot appears twice")
    for slot in slots:
        if slot not in SLOTS:
            raise ValueError(f"slot {slot} is not one of {priority_text(list(SLOTS))}")
        if slot not in known:
            raise ValueError(f"slot {slot} holds no network profile")
    return slots


def never_lower(current: int, new: int) -> str | None:
    """B09.FR.04 (no AllowSecurityProfileDowngrade): a network profile's security profile may not be
    lower than the one in use. Raising it is left to `station.trust.credentials` (SecurityCtrlr.SecurityProfile),
    which tries the higher profile and falls back when it fails."""
    if new < current:
        return f"security profile {new} is lower than the active profile {current}"
    return None


def refusal(profile: NetworkProfile, *, active_security_profile: int, has_password: bool,
            has_client_cert: bool, raise_refusal: str | None = "raising it is not possible here") -> tuple[str, str] | None:
    """(reasonCode, why) when a profile cannot be used (B09.FR.02/04/05); None when it can."""
    if profile.slot not in SLOTS:
        return "InvalidConfSlot", f"configuration slot {profile.slot} is not one of {priority_text(list(SLOTS))}"
    if profile.slot == CONFIGURED_SLOT:
        return "InvalidConfSlot", "slot 0 is the installation's endpoint (/etc/ocpp_station.env); use 1..3"
    try:
        parts = urlsplit(profile.url)
    except ValueError:
        return "InvalidNetworkConf", "ocppCsmsUrl is not a URL"
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        return "InvalidNetworkConf", "ocppCsmsUrl must be a ws:// or wss:// URL with a host"
    if "@" in parts.netloc:
        return "InvalidNetworkConf", "ocppCsmsUrl must not carry credentials"
    if profile.version not in VERSIONS.values():
        return "InvalidNetworkConf", "only OCPP 2.0.1 (OCPP20) and 1.6 (OCPP16) over JSON are supported"
    if profile.security_profile not in (0, 1, 2, 3):
        return "InvalidNetworkConf", f"security profile {profile.security_profile} does not exist"
    lower = never_lower(active_security_profile, profile.security_profile)
    if lower:
        return "NoSecurityDowngrade", lower
    if profile.security_profile > active_security_profile and raise_refusal is not None:
        # A05 via a network profile (TC_A_19): the prerequisites are station.trust.credentials' to judge
        # (`raise_refusal`); the profile is tried when the slot is used and kept once it connected.
        return "InvalidNetworkConf", (f"security profile {profile.security_profile} is above the active "
                                      f"{active_security_profile}: {raise_refusal}")
    if profile.security_profile >= 2 and parts.scheme != "wss":
        return "InvalidNetworkConf", f"security profile {profile.security_profile} needs a wss:// URL"
    if profile.security_profile in (1, 2) and not has_password:
        return "InvalidNetworkConf", "this station has no password for basic authentication"
    if profile.security_profile == 3 and not has_client_cert:
        return "InvalidNetworkConf", "this station has no client certificate for security profile 3"
    return None


class ProfileFile:
    """The persisted profiles, priority and last good slot, plus the history of outcomes."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / FILE_NAME
        self.history_path = Path(state_dir) / HISTORY_NAME

    def load(self) -> ProfileState:
        try:
            with safefile.open_dir(self.path.parent) as directory:
                data = json.loads(directory.read_text(FILE_NAME, MAX_FILE_BYTES))
        except FileNotFoundError:
            return ProfileState()
        except (OSError, ValueError):
            return ProfileState()  # unreadable (or a link, a FIFO): the configured endpoint still works
        if not isinstance(data, dict):
            return ProfileState()
        profiles = {}
        for key, raw in (data.get("profiles") or {}).items():
            try:
                profiles[int(key)] = NetworkProfile(**{k: raw[k] for k in NetworkProfile.__dataclass_fields__ if k in raw})
            except (TypeError, ValueError, KeyError):
                continue
        known = {CONFIGURED_SLOT, *profiles}
        priority = [int(s) for s in data.get("priority") or [] if isinstance(s, int) and s in known] or [CONFIGURED_SLOT]
        last_good = data.get("last_good")
        return ProfileState(profiles, priority, last_good if isinstance(last_good, int) else None)

    def save(self, state: ProfileState, *, owner: tuple[int, int] | None = None) -> None:
        """Atomically and durably, 0600; ``owner`` (uid, gid) when root writes it for the daemon's user.

        Root (``station-migrate-csms``) writes here into a directory the daemon's user controls:
        through `station.storage.safefile` (unpredictable temp name, O_EXCL|O_NOFOLLOW, fchown on the
        descriptor, rename), so a link planted in the directory is replaced, never written through."""
        with safefile.open_dir(self.path.parent, make=0o700) as directory:
            directory.replace(FILE_NAME, json.dumps(state.to_json(), indent=2), mode=0o600, owner=owner)

    def record(self, event: str, *, owner: tuple[int, int] | None = None, **details: Any) -> dict[str, Any]:
        """Append one outcome (``accepted``, ``failed``, ``fallback``, ``set``, ``priority``, ...)."""
        entry = {"utc": datetime.now(UTC).isoformat(timespec="seconds"), "event": event, **details}
        try:
            with safefile.open_dir(self.history_path.parent, make=0o700) as directory:
                directory.append(HISTORY_NAME, json.dumps(entry, sort_keys=True) + "\n", mode=0o600, owner=owner)
        except OSError:
            pass  # the log line and the event still tell
        return entry

    def history(self, limit: int = 50) -> list[dict[str, Any]]:
        try:
            with safefile.open_dir(self.history_path.parent) as directory, \
                    directory.open_read(HISTORY_NAME, limit=None) as handle:
                size = os.fstat(handle.fileno()).st_size
                handle.seek(max(0, size - HISTORY_TAIL_BYTES))  # the newest entries; a cut first line is skipped
                lines = handle.read(HISTORY_TAIL_BYTES).decode("utf-8", errors="replace").splitlines()[-limit:]
        except OSError:
            return []
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out
