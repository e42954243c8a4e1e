"""OCPP security block, shared by both versions: certificates (A02/A03, M03-M05) and security events.

`SecurityHandlers` is mixed into `V201Session` and `V16Session`; the 1.6 security whitepaper
(edition 3) reuses the 2.0.1 message names, so one handler per action serves both, and only the
payload shapes differ (the version is in `self.VERSION`). The work is done by
`station.trust.credentials.Credentials` and `station.trust.pki.RootStore`; nothing here touches files.

Security events raised here go to `core.security_events` (durable, see `station.core.security_events`).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

import structlog

from station.trust import pki, pki_worker
from station.trust.pki import PkiError
from station.trust.pki_worker import WorkerError
from station.ocpp.reason_codes import reason_code
from station.ocpp.rpc import CallErrorReceived, after_raw, on_raw

if TYPE_CHECKING:
    from station.ocpp.base import BaseSession
    from station.ocpp.client import OcppClient

log = structlog.get_logger("station.ocpp.security")

ROOT_TYPE_FROM_16 = {"CentralSystemRootCertificate": pki.CSMS_ROOT, "ManufacturerRootCertificate": pki.MANUFACTURER_ROOT}
ROOT_TYPE_TO_16 = {v: k for k, v in ROOT_TYPE_FROM_16.items()}
ISO15118_TYPES = frozenset({"V2GRootCertificate", "MORootCertificate", "V2GCertificateChain"})
"""2.0.1 certificate types of ISO 15118 (Plug & Charge): this station has no 15118 stack."""
DEFAULT_WAIT_MINIMUM_S = 60
DEFAULT_REPEAT_TIMES = 3
MAX_CHAIN_SIZE = 10000


# ------------------------------------------------------------------------- security events
def report_event(client: OcppClient, kind: str, tech_info: str = "") -> None:
    """Raise a security event (2.0.1 name): the durable security log and SecurityEventNotification."""
    client.core.security_events.record(kind, tech_info)


# ------------------------------------------------------------------------- certificate renewal
class Renewal:
    """A02/A03: SignCertificate with a fresh CSR, repeated while no CertificateSigned arrives.

    After `CertSigningWaitMinimum` s without a CertificateSigned the request is sent again, the
    wait doubling each time, at most `CertSigningRepeatTimes` more times (A02.FR.17-19).
    """

    def __init__(self, client: OcppClient) -> None:
        self.client = client
        self._task: asyncio.Task[None] | None = None
        self._signed = asyncio.Event()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def refusal(self) -> str | None:
        if self.client.credentials is None:
            return "no credential store"
        if not self.client.core.device_model.value("SecurityCtrlr", "OrganizationName"):
            return "OrganizationName (CpoName) not set"
        return None

    def start(self, reason: str) -> None:
        if self.running:
            return
        self._signed.clear()
        self._task = asyncio.get_running_loop().create_task(self._run(reason), name="ocpp-certificate-renewal")
        self.client.own(self._task)

    def signed(self) -> None:
        self._signed.set()

    async def watch(self, every_s: float = 86400) -> None:
        """A03: while connected, check once a day (and now) whether the certificate expires within a month."""
        credentials = self.client.credentials
        while credentials is not None:
            if credentials.profile == 3 and credentials.renewal_due() and self.refusal() is None:
                self.start("client certificate expires within a month")
            await asyncio.sleep(every_s)

    async def _run(self, reason: str) -> None:
        credentials = self.client.credentials
        assert credentials is not None
        wait = max(1, int(self.client.core.device_model.value("SecurityCtrlr", "CertSigningWaitMinimum")))
        repeats = max(0, int(self.client.core.device_model.value("SecurityCtrlr", "CertSigningRepeatTimes")))
        log.info("ocpp: requesting a new client certificate", reason=reason)
        for attempt in range(repeats + 1):
            session = self.client.session
            if session is not None and session.accepted:
                organization = str(self.client.core.device_model.value("SecurityCtrlr", "OrganizationName"))
                try:
                    csr = await credentials.new_csr(organization, fresh=attempt == 0)
                except (OSError, PkiError, WorkerError) as exc:
                    log.error("ocpp: no key for a certificate signing request", error=str(exc))
                    return
                payload: dict[str, Any] = {"csr": csr}
                if session.VERSION == "201":
                    payload["certificateType"] = "ChargingStationCertificate"
                try:
                    answer = await session.request("SignCertificate", payload)
                except (CallErrorReceived, TimeoutError, ConnectionError) as exc:
                    log.warning("ocpp: SignCertificate not answered", error=str(exc))
                except Exception as exc:  # noqa: BLE001 — link closed: the next attempt goes to the next session
                    log.warning("ocpp: SignCertificate not sent", error=exc.__class__.__name__)
                else:
                    if answer.get("status") != "Accepted":
                        log.warning("ocpp: the CSMS refused to have the certificate signed", status=answer.get("status"))
                        return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._signed.wait()
                return
            wait *= 2
            log.warning(f"ocpp: no CertificateSigned yet; asking again ({attempt + 1}/{repeats})" if attempt < repeats
                        else "ocpp: no CertificateSigned; giving up until asked again")


# ------------------------------------------------------------------------- the handlers
class SecurityHandlers:
    """CSMS → station certificate messages for both versions (mixed into the version sessions)."""

    def _answer(self: BaseSession, status: str, reason: str = "") -> dict[str, Any]:
        answer: dict[str, Any] = {"status": status}
        if reason and self.VERSION == "201":
            answer["statusInfo"] = {"reasonCode": reason_code(reason, status), "additionalInfo": reason[:512]}
        return answer

    def _root_kind(self: BaseSession, name: str) -> str | None:
        return ROOT_TYPE_FROM_16.get(name) if self.VERSION == "16" else (name if name in pki.ROOT_TYPES else None)

    def _type_name(self: BaseSession, kind: str) -> str:
        return ROOT_TYPE_TO_16[kind] if self.VERSION == "16" else kind

    # ---- M05: InstallCertificate ---------------------------------------------------------
    @on_raw("InstallCertificate")
    async def on_install_certificate(self: Any, payload: dict[str, Any]) -> dict[str, Any]:
        credentials = self.client.credentials
        kind = self._root_kind(payload["certificateType"])
        if kind is None:
            return self._answer("Rejected", "no ISO 15118 support")
        if credentials is None:
            return self._answer("Failed", "no certificate store")
        try:
            root = await pki_worker.call(  # checked in a child process: cryptography stays out of the daemon
                "install_root", directory=str(credentials.roots.directory), kind=kind, pem=payload["certificate"],
                now=self.core.clock.now().isoformat(), successor=kind == pki.CSMS_ROOT and credentials.additional_root_check)
        except pki_worker.WorkerError as exc:
            self.log.error("ocpp: certificate not installed", error=str(exc))
            return self._answer("Failed", "the certificate could not be checked")
        except pki.PkiError as exc:
            self.log.warning("ocpp: certificate not installed", certificate_type=payload["certificateType"], reason=str(exc))
            if kind == pki.CSMS_ROOT and "store full" not in str(exc):
                report_event(self.client, "InvalidCsmsCertificate", f"InstallCertificate refused: {exc}")  # TC_078
            return self._answer("Rejected", str(exc))
        report_event(self.client, "ReconfigurationOfSecurityParameters",
                     f"{payload['certificateType']} installed: {root['subject']}"[:255])
        return {"status": "Accepted"}

    # ---- M03: GetInstalledCertificateIds --------------------------------------------------
    @on_raw("GetInstalledCertificateIds")
    def on_get_installed_certificate_ids(self: Any, payload: dict[str, Any]) -> dict[str, Any]:
        credentials = self.client.credentials
        if self.VERSION == "16":
            kind = self._root_kind(payload["certificateType"])
            roots = credentials.roots.roots(kind) if credentials and kind else []
            if not roots:
                return {"status": "NotFound"}
            return {"status": "Accepted", "certificateHashData": [credentials.roots.hash_data(r) for r in roots]}
        wanted = payload.get("certificateType") or ["V2GRootCertificate", "MORootCertificate", *pki.ROOT_TYPES,
                                                     "V2GCertificateChain"]
        chains = []
        for name in wanted:
            if name in pki.ROOT_TYPES and credentials is not None:
                chains += [{"certificateType": name, "certificateHashData": credentials.roots.hash_data(r)}
                           for r in credentials.roots.roots(name)]
        if not chains:
            return {"status": "NotFound"}
        return {"status": "Accepted", "certificateHashDataChain": chains}

    # ---- M04: DeleteCertificate -------------------------------------------------------------
    @on_raw("DeleteCertificate")
    def on_delete_certificate(self: Any, payload: dict[str, Any]) -> dict[str, Any]:
        credentials = self.client.credentials
        wanted = payload["certificateHashData"]
        if credentials is not None:
            station_cert = credentials.certificate_fields()
            # Its issuer's key is not at hand here: issuer name and serial identify it well enough to refuse.
            if station_cert is not None and pki.same_hash_data(
                    pki.hash_data_der(station_cert, algorithm=wanted["hashAlgorithm"]) | {"issuerKeyHash": wanted["issuerKeyHash"]},
                    wanted):
                return self._answer("Failed", "the station certificate cannot be deleted")  # M04.FR.05
        root = credentials.roots.find(wanted) if credentials is not None else None
        if root is None:
            return {"status": "NotFound"}
        if root.kind == pki.CSMS_ROOT:
            reason = self._root_in_use(root)
            if reason:
                self.log.warning("ocpp: DeleteCertificate refused", reason=reason)
                return self._answer("Failed", reason)
        try:
            credentials.roots.remove(root)
        except OSError as exc:
            return self._answer("Failed", f"cannot delete: {exc.__class__.__name__}")
        report_event(self.client, "ReconfigurationOfSecurityParameters",
                     f"{self._type_name(root.kind)} deleted (SHA-256 fingerprint {root.path.stem})"[:255])
        return {"status": "Accepted"}

    def _root_in_use(self: Any, root: pki.InstalledRoot) -> str | None:
        """M04.FR.06 and never-locked-out: the root verifying this connection, or the last one, stays."""
        transport = getattr(self._connection, "transport", None)
        ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
        if ssl_object is None:
            return None  # not on TLS: no root verifies this connection
        credentials = self.client.credentials
        try:
            peer = pki.der_fields(ssl_object.getpeercert(binary_form=True) or b"")
        except pki.PkiError:
            peer = None
        if peer is not None and peer.issuer == root.fields.subject:  # by name: enough to refuse, no signature check
            return "this root verifies the current CSMS connection"
        if len(credentials.roots.roots(pki.CSMS_ROOT)) == 1 and not self.client.params.ca_bundle:
            return "the last CSMS root certificate cannot be deleted"
        return None

    # ---- A02/A03: CertificateSigned ------------------------------------------------------------
    @on_raw("CertificateSigned")
    async def on_certificate_signed(self: Any, payload: dict[str, Any]) -> dict[str, Any]:
        credentials = self.client.credentials
        if payload.get("certificateType", "ChargingStationCertificate") != "ChargingStationCertificate":
            return self._answer("Rejected", "no ISO 15118 support")
        chain = payload["certificateChain"]
        if credentials is None:
            problem = "no credential store"
        elif len(chain) > int(self.core.device_model.value("SecurityCtrlr", "MaxCertificateChainSize")):
            problem = "certificate chain too long"
        else:
            problem = await credentials.install_signed(chain)
        if problem:
            report_event(self.client, "InvalidChargingStationCertificate", problem)  # A02.FR.07
            return self._answer("Rejected", problem)
        self.client.renewal.signed()
        return {"status": "Accepted"}

    @after_raw("CertificateSigned")
    async def after_certificate_signed(self: Any, payload: dict[str, Any]) -> None:
        """Reconnect with the new certificate as soon as it is valid (A02.FR.08): at once, so it is proven
        (or refused) while the CSMS watches, or at its notBefore."""
        credentials = self.client.credentials
        start = credentials.new_certificate_start() if credentials is not None else None
        if start is None or credentials.profile != 3:
            return
        delay = max(0.2, (start - self.core.clock.now()).total_seconds())  # the answer goes out first
        client = self.client

        async def switch() -> None:
            await asyncio.sleep(delay)
            if credentials.attempt().trying & {"certificate"}:
                log.info("ocpp: reconnecting with the new client certificate")
                await client.link.disconnect()

        client.own(asyncio.get_running_loop().create_task(switch(), name="ocpp-certificate-switch"))

    def trigger_certificate_renewal(self: Any) -> str:
        """TriggerMessage SignChargingStationCertificate / ExtendedTriggerMessage SignChargePointCertificate."""
        refusal = self.client.renewal.refusal()
        if refusal:
            self.log.warning("ocpp: certificate renewal not possible", reason=refusal)
            return "Rejected"
        return "Accepted"
