"""CustomerInformation → NotifyCustomerInformation (OCPP 2.0.1 N09/N10) over the strict dev CSMS."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from station.core.customer_data import NOTHING_STORED
from station.core.store import Store, TransactionRecord
from station.devtools.csms import Received
from tests.ocpp_helpers import Rig, rig_on_dev_csms

TOKEN = "DRIVER-7F3A"


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with rig_on_dev_csms("201", tmp_path / "station.db") as rig:
        yield rig


async def ask(rig: Rig, request_id: int, **fields: Any) -> tuple[dict[str, Any], list[Received]]:
    """The answer and, when Accepted, the NotifyCustomerInformation messages up to the one without tbc."""
    mark = rig.csms.mark()
    answer = await rig.csms.call("CP", "CustomerInformation", {"requestId": request_id, **fields})
    if answer["status"] != "Accepted":
        return answer, []
    await rig.csms.wait_for("NotifyCustomerInformation", since=mark, predicate=lambda r: not r.payload.get("tbc"))
    return answer, [r for r in rig.csms.calls("NotifyCustomerInformation") if rig.csms.received.index(r) >= mark]


def text(notes: list[Received]) -> str:
    return "".join(n.payload["data"] for n in notes)


def id_token(token: str = TOKEN) -> dict[str, str]:
    return {"idToken": token, "type": "ISO14443"}


async def remember(rig: Rig) -> None:
    """The station authorizes the token once: the CSMS's answer lands in the authorization cache."""
    assert rig.core is not None
    await rig.core.authorize_token(TOKEN, "ISO14443")
    await rig.csms.call("CP", "ReserveNow", {"id": 5, "expiryDateTime": "2099-01-01T00:00:00.000Z", "idToken": id_token(),
                                             "evseId": 1})


async def test_a_report_names_what_the_station_holds_about_the_token(rig: Rig) -> None:
    await remember(rig)
    answer, notes = await ask(rig, 3, report=True, clear=False, idToken=id_token())
    assert answer["status"] == "Accepted"
    assert [(n.payload["seqNo"], n.payload["requestId"]) for n in notes] == [(0, 3)]
    assert "Authorization cache: status Accepted" in text(notes) and "Reservation 5" in text(notes)
    assert TOKEN not in text(notes)


async def test_a_token_the_station_does_not_know_gets_one_message_saying_no_data(rig: Rig) -> None:
    answer, notes = await ask(rig, 4, report=True, clear=False, customerIdentifier="nobody-here")
    assert answer["status"] == "Accepted" and [n.payload["data"] for n in notes] == [NOTHING_STORED]


async def test_clear_erases_the_data_durably_and_says_what_it_erased(rig: Rig) -> None:
    await remember(rig)
    assert rig.core is not None
    answer, notes = await ask(rig, 6, report=False, clear=True, idToken=id_token(TOKEN.lower()))
    assert answer["status"] == "Accepted"
    assert "Cleared: authorization cache entry." in text(notes) and "Cleared: reservation 5" in text(notes)
    reopened = Store(rig.db)
    try:
        assert reopened.cache_entry(TOKEN) is None and reopened.reservations() == []
    finally:
        reopened.close()
    _, after = await ask(rig, 7, report=True, clear=False, idToken=id_token())
    assert text(after) == NOTHING_STORED


async def test_clear_with_report_sends_what_was_held_then_what_was_erased(rig: Rig) -> None:
    await remember(rig)
    _, notes = await ask(rig, 8, report=True, clear=True, idToken=id_token())
    body = text(notes)
    assert body.index("Authorization cache: status") < body.index("Cleared: authorization cache entry.")


async def test_a_long_report_is_paged_in_512_characters_with_seq_no_and_tbc(rig: Rig) -> None:
    assert rig.core is not None
    store = rig.core.store
    for n in range(40):  # forty finished transactions of this driver
        with store.transaction("seed") as db:
            store.save_transaction(db, TransactionRecord(f"tx-{n:03d}-0123456789abcdef", 1, TOKEN, "ISO14443", None,
                                                         "2026-01-01T10:00:00+00:00", "2026-01-01T11:00:00+00:00",
                                                         1000.0, 9000.0))
    _, notes = await ask(rig, 9, report=True, clear=False, idToken=id_token())
    assert len(notes) > 1
    assert [n.payload["seqNo"] for n in notes] == list(range(len(notes)))
    assert [bool(n.payload.get("tbc")) for n in notes] == [True] * (len(notes) - 1) + [False]
    assert all(len(n.payload["data"]) <= 512 for n in notes)
    assert text(notes).count("Transaction tx-") == 40


@pytest.mark.parametrize(("fields", "status"), [
    ({"report": False, "clear": False, "idToken": id_token()}, "Rejected"),
    ({"report": True, "clear": False}, "Invalid"),
    ({"report": True, "clear": False, "idToken": id_token(), "customerIdentifier": "x"}, "Invalid"),
    ({"report": True, "clear": True, "idToken": {"idToken": "", "type": "NoAuthorization"}}, "Invalid"),
], ids=["neither-report-nor-clear", "no-customer-reference", "two-customer-references", "empty-token"])
async def test_a_request_that_cannot_be_carried_out_is_refused_and_nothing_is_sent(
        rig: Rig, fields: dict[str, Any], status: str) -> None:
    answer, notes = await ask(rig, 10, **fields)
    assert answer["status"] == status and answer["statusInfo"]["reasonCode"]
    assert rig.calls("NotifyCustomerInformation") == []


async def test_a_customer_certificate_finds_nothing_stored(rig: Rig) -> None:
    certificate = {"hashAlgorithm": "SHA256", "issuerNameHash": "a" * 64, "issuerKeyHash": "b" * 64, "serialNumber": "01"}
    answer, notes = await ask(rig, 11, report=True, clear=False, customerCertificate=certificate)
    assert answer["status"] == "Accepted" and len(notes) == 1 and "certificate" in notes[0].payload["data"]
