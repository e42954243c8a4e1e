"""Which network connection profile the link uses now (B10), on top of `station.network_profiles`.

The order is fixed when the daemon starts (NetworkConfigurationPriority as stored then, B10.FR.04):
each profile gets `attempts` failed connection attempts in a row (B10.FR.03, counted again after
every lost connection), then the next one is tried. When every entry failed, the profile that
last worked is used and kept (B10.FR.07/09). A profile whose BootNotification is accepted becomes
the last good one. Both outcomes — the new endpoint accepted, or abandoned for a fallback — are
logged, published as an event (`network_profile`) and appended to the profile history; a change of
security profile also raises the security event ReconfigurationOfSecurityParameters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import structlog

from station.network_profiles import CONFIGURED_SLOT, NetworkProfile, ProfileFile, parse_priority, priority_text
from station.ocpp.connection import LinkParams, public_url, resolve_security_profile

log = structlog.get_logger("station.ocpp.link")

Outcome = Callable[[dict[str, Any]], None]


class Endpoints:
    """The connection plan of one daemon run; see the module docstring."""

    def __init__(self, base: LinkParams, state_dir: Path, *, on_outcome: Outcome | None = None) -> None:
        self.base = base
        self.file = ProfileFile(state_dir)
        self.state = self.file.load()
        self.order = [s for s in self.state.priority if s == CONFIGURED_SLOT or s in self.state.profiles] or [CONFIGURED_SLOT]
        self.on_outcome = on_outcome
        self.index = 0
        self.staying = False
        """All entries failed: staying on the last good profile (B10.FR.07)."""
        self.slot = self.order[0]
        self.accepted_slot: int | None = None

    @property
    def switching(self) -> bool:
        """More than one profile to choose from (else the link runs exactly as configured)."""
        return len(self.order) > 1 or self.order != [CONFIGURED_SLOT]

    def profile(self, slot: int) -> NetworkProfile:
        if slot == CONFIGURED_SLOT:
            version = self.base.primary
            url = (self.base.url_201 if version == "201" else self.base.url_16) or self.base.url_201 or self.base.url_16 or ""
            return NetworkProfile(CONFIGURED_SLOT, url, version, resolve_security_profile(self.base), source="config")
        return self.state.profiles[slot]

    def params(self, slot: int | None = None) -> LinkParams:
        slot = self.slot if slot is None else slot
        if slot == CONFIGURED_SLOT:
            return self.base
        p = self.state.profiles[slot]
        url = p.endpoint(self.base.station_id)
        return replace(self.base, primary=p.version, url_201=url if p.version == "201" else None,
                       url_16=url if p.version == "16" else None, security_profile=p.security_profile)

    def describe(self, slot: int) -> dict[str, Any]:
        p = self.profile(slot)
        return {"slot": slot, "url": public_url(p.endpoint(self.base.station_id)), "version": p.version,
                "security_profile": p.security_profile}

    # ---- outcomes ---------------------------------------------------------------------------
    def _outcome(self, event: str, **details: Any) -> None:
        entry = self.file.record(event, **details)
        if self.on_outcome is not None:
            self.on_outcome(entry)

    def failed(self, attempts: int, error: str | None) -> int:
        """The current profile used up its attempts: the slot to try next."""
        failed = self.slot
        if self.staying:
            return failed
        self.index += 1
        if self.index < len(self.order):
            self.slot = self.order[self.index]
            what = "fallback"
        else:
            good = self.state.last_good if self.state.last_good in (CONFIGURED_SLOT, *self.state.profiles) else None
            if good is not None:
                self.slot, self.staying = good, True
                what = "fallback"
            else:
                self.index, self.slot = 0, self.order[0]  # nothing ever worked: round again (B10.FR.08)
                what = "retry"
        log.warning(f"ocpp link: network profile {failed} not reachable after {attempts} attempt(s); "
                    f"trying profile {self.slot}", failed=self.describe(failed), next=self.describe(self.slot), error=error)
        self._outcome(what, failed=self.describe(failed), attempts=attempts, error=error, next=self.describe(self.slot))
        return self.slot

    def accepted(self, security_event: Callable[[str, str], Any] | None = None) -> None:
        """BootNotification accepted on the current profile (once per profile and run)."""
        if self.accepted_slot == self.slot:
            return
        previous_good = self.state.last_good
        self.accepted_slot = self.slot
        first_choice = self.slot == self.order[0]
        changed = previous_good != self.slot
        (log.info if first_choice else log.warning)(
            f"ocpp link: network profile {self.slot} accepted by the CSMS"
            + ("" if first_choice else f" (fallback; preferred profile {self.order[0]} was not reachable)"),
            profile=self.describe(self.slot))
        if changed:
            before = self.profile(previous_good) if previous_good in (CONFIGURED_SLOT, *self.state.profiles) else None
            self.state.last_good = self.slot
            try:
                self.file.save(self._fresh_with_last_good())
            except OSError as exc:
                log.warning("ocpp link: last good network profile not saved", error=str(exc))
            if security_event is not None and before is not None and before.security_profile != self.profile(self.slot).security_profile:
                security_event("ReconfigurationOfSecurityParameters",
                               f"security profile {before.security_profile} -> {self.profile(self.slot).security_profile} "
                               f"(network profile {self.slot})")
        if self.switching or changed:  # a station on its installed endpoint alone adds no line per start
            self._outcome("accepted" if first_choice else "fallback-accepted", profile=self.describe(self.slot),
                          preferred=self.order[0])

    def _fresh_with_last_good(self) -> Any:
        """Profiles and priority as stored now (the CSMS may have changed them meanwhile) + last good."""
        fresh = self.file.load()
        fresh.last_good = self.slot
        return fresh

    # ---- changes from the CSMS (take effect at the next start) ---------------------------------
    def set_profile(self, profile: NetworkProfile) -> None:
        fresh = self.file.load()
        fresh.profiles[profile.slot] = profile
        self.file.save(fresh)
        self.state.profiles.setdefault(profile.slot, profile)
        self._outcome("set", profile=self.describe_profile(profile))

    def describe_profile(self, p: NetworkProfile) -> dict[str, Any]:
        return {"slot": p.slot, "url": public_url(p.endpoint(self.base.station_id)), "version": p.version,
                "security_profile": p.security_profile}

    def priority(self) -> str:
        return priority_text(self.file.load().priority)

    def set_priority(self, text: str) -> None:
        """ValueError when a slot is unknown; applied at the next start (Reset)."""
        fresh = self.file.load()
        fresh.priority = parse_priority(text, {CONFIGURED_SLOT, *fresh.profiles})
        self.file.save(fresh)
        self._outcome("priority", priority=priority_text(fresh.priority))
