"""The station's CSMS credentials as the CSMS may change them: password, client certificate, security profile.

The configuration file gives the provisioned values. The CSMS can then (OCPP A01, A02/A03, A05):

- set a new password: it is tried on the next connection; until one connection has worked with
  it, a refusal (HTTP 401/403) makes the station try the previous password again (they alternate
  while neither worked), and a success with the previous one drops the new one and is reported.
- have a new client certificate signed: the key is made here and never leaves the station; the
  signed certificate is used from its notBefore on, and becomes the certificate only once a
  connection worked with it. After `PROFILE_ATTEMPTS` failed connections with it in a row, the
  previous certificate is used again.
- raise the security profile, never lower it (A05.FR.01, A00.FR.005): the new profile is tried;
  after `PROFILE_ATTEMPTS` failed connections in a row the previous profile is restored and
  the fallback reported.

So the station is never locked out by a change made over OCPP. State lives in
``<state>/pki/credentials.json`` (0600) and the station's key and certificate, one directory per
generation switched as a pair (`station.trust.generations`: never a new key beside an old
certificate, even after a power cut). When the provisioned
values change (a technician re-provisions the station), the OCPP-made state is discarded.

Events worth a SecurityEventNotification are handed to `on_event(type, tech_info)` (2.0.1 names).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog

from station.trust import generations, pki
from station.ocpp.connection import Attempt, FailureKind, LinkParams, resolve_security_profile

log = structlog.get_logger("station.trust.credentials")

PROFILE_ATTEMPTS = 3
"""Failed connections with a raised profile before the previous one is restored."""
RENEW_BEFORE = timedelta(days=30)
"""A03.FR.02: a certificate expiring within a month is renewed."""
PASSWORD_201 = re.compile(r"^[A-Za-z0-9*\-_=:+|@.]{16,40}$")
"""2.0.1 passwordString: 16..40 characters, alphanumerics and * - _ = : + | @ ."""
AUTH_KEY_16 = re.compile(r"^(?:[0-9A-Fa-f]{2}){16,20}$")
"""1.6 AuthorizationKey: 16..20 bytes, written as 32..40 hexadecimal digits."""

EventSink = Callable[[str, str], None]


def parse_password(text: str, version: str) -> bytes:
    """The password bytes a CSMS sets (2.0.1 BasicAuthPassword / 1.6 AuthorizationKey); ValueError if malformed."""
    if version == "16":
        if not AUTH_KEY_16.match(text):
            raise ValueError("AuthorizationKey must be 16 to 20 bytes written as 32 to 40 hexadecimal digits")
        return bytes.fromhex(text)
    if not PASSWORD_201.match(text):
        raise ValueError("BasicAuthPassword must be 16 to 40 characters: letters, digits and * - _ = : + | @ .")
    return text.encode()


class Credentials:
    """The credential source of `OcppLink` for the daemon; see the module docstring."""

    def __init__(
        self,
        state_dir: Path,
        params: LinkParams,
        *,
        roots: pki.RootStore | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_event: EventSink | None = None,
        read_only: bool = False,
        additional_root_check: bool = False,
    ) -> None:
        self.params = params
        self.additional_root_check = additional_root_check
        """One CSMS root at a time, each new one signed by its predecessor (M05.FR.08-13)."""
        self.read_only = read_only
        """Use what the daemon stored without changing a file (`station --once`, possibly run as root)."""
        self.directory = state_dir / "pki"
        self.roots = roots or pki.RootStore(self.directory / "roots")
        self.now = now
        self.on_event = on_event
        self.base_profile = resolve_security_profile(params)
        self._file = self.directory / "credentials.json"
        self._station = self.directory / "station"
        self._try_new_password = True
        self._profile_failures = 0
        self._certificate_failures = 0
        self._state = self._load()
        if not read_only:
            try:
                generations.migrate(self._station)
                if not self._file.exists():
                    self._save()
                self.roots.seed(pki.CSMS_ROOT, Path(params.ca_bundle) if params.ca_bundle else None)
            except OSError as exc:  # the station still connects with the provisioned values
                log.error("credentials: state directory not writable; changes over OCPP will not persist",
                          path=str(self.directory), error=exc.__class__.__name__)

    # ------------------------------------------------------------------ persistence
    def _provisioned(self) -> str:
        p = self.params
        text = json.dumps([p.password, self.base_profile, str(p.client_cert), str(p.ca_bundle)])
        return hashlib.sha256(text.encode()).hexdigest()

    def _load(self) -> dict[str, Any]:
        try:
            state = json.loads(self._file.read_text())
        except FileNotFoundError:
            state = {}
        except (OSError, ValueError) as exc:
            log.error("credentials: state unreadable; using the provisioned values", error=exc.__class__.__name__)
            state = {}
        if state and state.get("provisioned") != self._provisioned() and self.read_only:
            state = {}
        elif state and state.get("provisioned") != self._provisioned():
            log.warning("credentials: provisioned values changed; credentials set over OCPP are discarded")
            try:
                generations.discard(self._station)
                (self._station / "pending.key").unlink(missing_ok=True)
            except OSError as exc:  # redone at the next start: the saved state still names the old provisioning
                log.error("credentials: earlier client certificates not removed", error=exc.__class__.__name__)
            state = {}
        state["provisioned"] = self._provisioned()
        return state

    def _save(self) -> None:
        if not self.read_only:
            pki.write_private(self._file, json.dumps(self._state).encode())

    def _persist(self) -> None:
        """Save after a connection's outcome: a full disk is logged, never breaks the link."""
        try:
            self._save()
        except OSError as exc:
            log.error("credentials: state not saved", error=exc.__class__.__name__)

    def _commit(self, key: str, value: Any) -> None:
        """Set and save a CSMS change, or refuse it (ValueError) with nothing changed."""
        before = self._state.get(key)
        self._state[key] = value
        try:
            self._save()
        except OSError as exc:
            if before is None:
                self._state.pop(key)
            else:
                self._state[key] = before
            raise ValueError(f"cannot be stored ({exc.__class__.__name__})") from None

    # ------------------------------------------------------------------ what is in force
    @property
    def profile(self) -> int:
        return int(self._state.get("profile_candidate") or self._state.get("profile") or self.base_profile)

    @property
    def established_profile(self) -> int:
        """The profile a connection has worked with (the candidate not counted)."""
        return int(self._state.get("profile") or self.base_profile)

    def _password(self) -> bytes | None:
        stored = self._state.get("password")
        if stored is not None:
            return bytes.fromhex(stored)
        return self.params.password.encode() if self.params.password else None

    def has_password(self) -> bool:
        return bool(self._password() or self._state.get("password_candidate"))

    def _certificate(self) -> tuple[str | None, str | None]:
        """(cert, key) paths: the OCPP-installed certificate in force, else the provisioned one."""
        pair = generations.current_pair(self._station)
        if pair is not None:
            return str(pair[0]), str(pair[1])
        p = self.params
        return (str(p.client_cert) if p.client_cert else None, str(p.client_key) if p.client_key else None)

    def certificate_fields(self) -> pki.DerFields | None:
        """Serial and names of the client certificate in force, read without `cryptography`."""
        path, _ = self._certificate()
        try:
            return pki.der_fields(pki.pem_blocks_der(Path(path).read_bytes())[0]) if path else None
        except (OSError, IndexError, pki.PkiError):
            return None

    def new_certificate_start(self) -> datetime | None:
        """notBefore of a signed certificate waiting to be used, or None."""
        pair = generations.candidate(self._station)
        validity = _validity(str(pair[0])) if pair else None
        return validity[0] if validity is not None else None

    def _new_certificate_usable(self) -> bool:
        """A02.FR.08: a signed certificate is used from its notBefore on."""
        pair = generations.candidate(self._station)
        validity = _validity(str(pair[0])) if pair else None
        return validity is not None and validity[0] <= self.now() <= validity[1]

    def attempt(self, requested: int | None = None) -> Attempt:
        """What to present next; `requested`: the profile of the network profile in use (B09), tried
        when it is higher than the one in force and its prerequisites hold, never a lower one."""
        trying: set[str] = set()
        profile = self.profile
        if self._state.get("profile_candidate"):
            trying.add("profile")
        elif requested is not None and requested > profile and self.profile_refusal(requested, urls=[]) is None:
            profile = requested
            trying.add("profile")
        password = self._password()
        candidate = self._state.get("password_candidate")
        if candidate is not None and profile in (1, 2) and (self._try_new_password or password is None):
            password = bytes.fromhex(candidate)
            trying.add("password")
        cert, key = self._certificate()
        candidate = generations.candidate(self._station) if profile == 3 and self._new_certificate_usable() else None
        if candidate is not None:
            cert, key = str(candidate[0]), str(candidate[1])
            trying.add("certificate")
        roots = self.roots.pem(pki.CSMS_ROOT)
        return Attempt(profile, password, cert, key, str(self.params.ca_bundle) if self.params.ca_bundle else None,
                       roots or None, frozenset(trying))

    # ------------------------------------------------------------------ outcomes of a connection
    def connected(self, attempt: Attempt, server_certificate: bytes | None = None) -> None:
        if server_certificate is not None and not self.read_only and self.roots.fallback_path() is not None:
            # TLS verified the chain; its issuer being the successor (by name) means the successor did it.
            fallback = self.roots.fallback_path()
            try:
                issuer = pki.der_fields(server_certificate).issuer
            except pki.PkiError:
                issuer = b""
            if any(r.path != fallback and r.fields.subject == issuer for r in self.roots.roots(pki.CSMS_ROOT)):
                self.roots.drop_fallback()
        changed = False
        if "password" in attempt.trying:
            self._state["password"] = self._state.pop("password_candidate")
            log.warning("credentials: the new password works; the previous one is forgotten")
            changed = True
        elif self._state.get("password_candidate") is not None and attempt.profile in (1, 2):
            self._state.pop("password_candidate")
            self._event("FailedToAuthenticateAtCsms", "the CSMS refused the new password; the previous one is in use again")
            changed = True
        if "certificate" in attempt.trying:
            self._certificate_failures = 0
            self._promote_certificate(Path(attempt.client_cert or ""), proven=True)
        elif attempt.profile == 3 and not self.read_only and attempt.client_cert:
            self._proven(Path(attempt.client_cert))
        if "profile" in attempt.trying:
            self._state["profile"] = attempt.profile
            self._state.pop("profile_candidate", None)
            self._profile_failures = 0
            self._event("ReconfigurationOfSecurityParameters", f"security profile {attempt.profile} in use")
            changed = True
        if changed:
            self._persist()

    def failed(self, attempt: Attempt, kind: FailureKind) -> None:
        changed = False
        if kind is FailureKind.AUTH_FAILED and self._state.get("password_candidate") is not None:
            self._try_new_password = "password" not in attempt.trying  # alternate until one works
            log.warning("credentials: password refused; trying the "
                        + ("new" if self._try_new_password else "previous") + " one next")
        if "certificate" in attempt.trying and kind is not FailureKind.LOST and not self.read_only:
            # A refused client certificate shows as a TLS alert, or (TLS 1.3) as a reset after the
            # handshake: count every failure, give up on the new certificate after a few in a row.
            self._certificate_failures += 1
            if self._certificate_failures >= PROFILE_ATTEMPTS:
                self._certificate_failures = 0
                if attempt.client_cert:
                    try:
                        generations.drop(self._station, Path(attempt.client_cert).parent)
                    except OSError as exc:
                        log.error("credentials: refused client certificate not removed", error=exc.__class__.__name__)
                self._event("FailedToAuthenticateAtCsms",
                            f"no connection with the new client certificate ({kind.value}); the previous one is in use again")
        if "profile" in attempt.trying and kind is not FailureKind.LOST and self._state.get("profile_candidate"):
            self._profile_failures += 1
            if self._profile_failures >= PROFILE_ATTEMPTS:
                raised = self._state.pop("profile_candidate")
                self._profile_failures = 0
                self._event("ReconfigurationOfSecurityParameters",
                            f"could not connect with security profile {raised} ({kind.value}); "
                            f"back to profile {self.established_profile}")
                changed = True
        if changed:
            self._persist()

    def _event(self, kind: str, tech_info: str) -> None:
        log.warning(f"credentials: {tech_info}", security_event=kind)
        if self.on_event is not None:
            self.on_event(kind, tech_info)

    # ------------------------------------------------------------------ A01: password
    def set_password(self, text: str, version: str) -> None:
        """Store a new password to try on the next connection (ValueError: malformed, nothing stored)."""
        new = parse_password(text, version)
        self._commit("password_candidate", new.hex())
        self._try_new_password = True
        from station import logs

        logs.register_secrets([new.decode("utf-8", "replace"), text])
        self._event("ReconfigurationOfSecurityParameters", "basic authentication password changed by the CSMS")

    # ------------------------------------------------------------------ A05: security profile
    def profile_refusal(self, new: int, *, urls: list[str] | None = None) -> str | None:
        """Why the profile cannot be raised to `new` now (A05.FR.01-04); None when it can.

        `urls`: the endpoints the new profile would be used with (default: the configured ones)."""
        current = self.profile
        if new <= current:
            return f"security profile {current} in use; it can only be raised"
        if new not in (1, 2, 3):
            return "security profile must be 1, 2 or 3"
        if new in (1, 2) and not self.has_password():
            return "no password set"
        if urls is None:
            urls = [u for u in (self.params.url_201, self.params.url_16) if u]
        if new in (2, 3):
            if any(not u.startswith("wss://") for u in urls):
                return "the CSMS URL is not wss://"
            if not (self.roots.roots(pki.CSMS_ROOT) or self.params.ca_bundle):
                return "no CSMS root certificate installed"
        if new == 3:
            path, _ = self._certificate()
            validity = _validity(path) if path else None
            if validity is None or not validity[0] <= self.now() <= validity[1]:
                return "no valid client certificate installed"
        return None

    def raise_profile(self, new: int) -> None:
        """Try `new` from the next connection on (call `profile_refusal` first)."""
        refusal = self.profile_refusal(new)
        if refusal:
            raise ValueError(refusal)
        self._commit("profile_candidate", new)
        self._profile_failures = 0
        self._event("ReconfigurationOfSecurityParameters", f"security profile {new} requested by the CSMS")

    # ------------------------------------------------------------------ A02/A03: client certificate
    async def new_csr(self, organization: str, *, fresh: bool = True) -> str:
        """A CSR for a new key (0600, made on the device), which waits for the signed certificate.

        `fresh=False` (a repeated request) signs the pending key again, so that a CertificateSigned
        for the earlier request still matches. Made in a child process (`station.trust.pki_worker`)."""
        from station.trust import pki_worker

        return str(await pki_worker.call("make_csr", pending=str(self._station / "pending.key"),
                                         station_id=self.params.station_id, organization=organization, fresh=fresh))

    async def install_signed(self, chain_pem: str) -> str | None:
        """Check a CertificateSigned chain (A02.FR.06) and keep it as the next certificate; why not, or None."""
        from station.trust import pki_worker

        if self.read_only:
            return "credentials are read-only here"
        try:
            leaf = await pki_worker.call(
                "store_signed", chain=chain_pem, station_dir=str(self._station), station_id=self.params.station_id,
                roots_dir=str(self.roots.directory), bundle=str(self.params.ca_bundle) if self.params.ca_bundle else None,
                now=self.now().isoformat())
        except pki.PkiError as exc:
            return str(exc)
        except pki_worker.WorkerError as exc:
            log.error("credentials: certificate check failed", error=str(exc))
            return "the certificate could not be checked"
        log.warning("credentials: new client certificate installed", serial=leaf["serial"], not_after=leaf["not_after"])
        if self.profile != 3:
            # Not presented on this profile: nothing to prove it on now, it is there for a raise to 3.
            candidate = generations.candidate(self._station)
            if candidate is not None:
                self._promote_certificate(candidate[0], proven=False)
        return None

    def _promote_certificate(self, cert: Path, *, proven: bool) -> None:
        """Make the candidate holding `cert` the pair in force: one atomic switch of the generation.

        `proven`: a connection worked with it, so older generations go; otherwise the previous one
        stays until one has (`_proven`)."""
        if self.read_only:
            return
        try:
            generations.switch(self._station, cert.parent)
        except (OSError, ValueError) as exc:
            log.error("credentials: new client certificate not switched to", error=exc.__class__.__name__)
            return
        if proven:
            self._proven(cert)
            log.warning("credentials: the new client certificate works; the previous one is removed")
        else:
            log.warning("credentials: new client certificate in force; the previous one is kept until it has worked")

    def _proven(self, cert: Path) -> None:
        """A connection authenticated with `cert`: when it is the current generation, prune older ones."""
        current = generations.current_pair(self._station)
        if current is not None and current[0] == cert:
            try:
                generations.prune(self._station)
            except OSError as exc:
                log.error("credentials: previous client certificate not removed", error=exc.__class__.__name__)

    def renewal_due(self) -> bool:
        """A03: the certificate in force expires within a month (and no renewal is pending).

        Checked at every connection, so read with the ssl module's decoder, not `cryptography`."""
        path, _ = self._certificate()
        if path is None or generations.candidate(self._station) is not None:
            return False
        validity = _validity(path)
        return validity is not None and validity[1] - self.now() < RENEW_BEFORE


def _validity(path: str) -> tuple[datetime, datetime] | None:
    """(notBefore, notAfter) of a PEM certificate file, read with CPython's own decoder (no `cryptography`)."""
    import ssl

    try:
        decoded = ssl._ssl._test_decode_cert(path)  # type: ignore[attr-defined]  # noqa: SLF001
        return (datetime.fromtimestamp(ssl.cert_time_to_seconds(decoded["notBefore"]), UTC),
                datetime.fromtimestamp(ssl.cert_time_to_seconds(decoded["notAfter"]), UTC))
    except (AttributeError, OSError, KeyError, ValueError, ssl.SSLError):
        try:
            cert = pki.load_chain(Path(path).read_bytes())[0]
        except (OSError, pki.PkiError):
            return None
        return cert.not_valid_before_utc, cert.not_valid_after_utc
