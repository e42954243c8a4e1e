"""CustomerInformation → NotifyCustomerInformation (OCPP 2.0.1 N09/N10), mixed into `V201Session`.

The core (`station.core.customer_data`) reports and clears; this module reads the request, picks
the answer and pages the text into NotifyCustomerInformation messages (`data` at most 512
characters, `seqNo` from 0, `tbc` on all but the last), sent after the answer. 1.6 has no such
message.

Answers: Rejected when neither `report` nor `clear` is set (N09.FR.07 / N10.FR.07) or when the
state database refuses (N09.FR.03 / N10.FR.05); Invalid unless exactly one customer reference
(idToken, customerCertificate, customerIdentifier) is given (N09.FR.04 / N10.FR.08); Accepted
otherwise, followed by at least one message (N09.FR.06 / N10.FR.04: "no data" says so). A
customerIdentifier is looked up as a token's text (the station keys its data by token only); the
station stores no customer certificates (no ISO 15118 contracts), so a certificate finds nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from station.core.customer_data import NOTHING_STORED, CustomerData, CustomerDataError, pages
from station.ocpp.rpc import CallErrorReceived, after_raw, on_raw

DATA_MAX = 512
"""NotifyCustomerInformationRequest.data maxLength."""
REFERENCES = ("idToken", "customerCertificate", "customerIdentifier")


def _refusal(status: str, code: str, info: str) -> dict[str, Any]:
    return {"status": status, "statusInfo": {"reasonCode": code, "additionalInfo": info}}


class CustomerInformationHandlers:
    """The 2.0.1 session's CustomerInformation handler."""

    core: Any
    log: Any
    _customer_report: tuple[int, list[str]] | None = None

    @on_raw("CustomerInformation")
    def on_customer_information(self, payload: dict[str, Any]) -> dict[str, Any]:
        self._customer_report = None
        report, clear = bool(payload["report"]), bool(payload["clear"])
        if not report and not clear:
            return _refusal("Rejected", "NothingRequested", "neither report nor clear is set")
        given = [key for key in REFERENCES if payload.get(key) is not None]
        if len(given) != 1:
            return _refusal("Invalid", "CustomerReference", "give exactly one of idToken, customerCertificate, customerIdentifier")
        if given[0] == "customerCertificate":
            lines = ["No customer certificate is stored at this station."]
        else:
            token = payload["idToken"]["idToken"] if given[0] == "idToken" else str(payload["customerIdentifier"])
            if not token.strip():  # NoAuthorization's empty idToken names no customer
                return _refusal("Invalid", "CustomerReference", "the customer reference is empty")
            data = CustomerData(self.core)
            try:  # report first: a clear with report says what was there, then what was erased (N10.FR.03)
                found = data.report(token) if report else []
                cleared = data.clear(token) if clear else []
            except CustomerDataError as exc:
                self.log.error("ocpp: CustomerInformation not carried out: state database refused", error=str(exc))
                return _refusal("Rejected", "StorageFailure", "the station's database refused the request")
            lines = [line for line in found + cleared if line != NOTHING_STORED] or [NOTHING_STORED]
        self._customer_report = (int(payload["requestId"]), pages(lines, DATA_MAX))
        return {"status": "Accepted"}

    @after_raw("CustomerInformation")
    async def after_customer_information(self, payload: dict[str, Any]) -> None:
        prepared, self._customer_report = self._customer_report, None
        if prepared is None:
            return
        request_id, chunks = prepared
        generated = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        for seq_no, chunk in enumerate(chunks):
            message: dict[str, Any] = {"data": chunk, "seqNo": seq_no, "generatedAt": generated, "requestId": request_id}
            if seq_no < len(chunks) - 1:
                message["tbc"] = True
            try:
                await self.request("NotifyCustomerInformation", message)  # type: ignore[attr-defined]
            except (CallErrorReceived, TimeoutError) as exc:
                self.log.warning("ocpp: NotifyCustomerInformation not confirmed; report abandoned",
                                 request_id=request_id, seq_no=seq_no, error=str(exc))
                return
