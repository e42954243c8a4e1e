"""GetTransactionStatus (OCPP 2.0.1 E14): ongoing or not, messages still queued or not."""

from __future__ import annotations

from pathlib import Path

from ocpp.exceptions import InternalError

from station.core.store import Store
from station.devtools.csms import DevCsms, Received
from tests.ocpp_helpers import Rig, eventually, rig_on_dev_csms


async def started_transaction(rig: Rig) -> str:
    assert rig.core is not None and rig.esp is not None
    rig.core.request_start(1, "TAG1", "ISO14443", trigger="Authorized")
    rig.esp.plug()
    tx = rig.core.connectors[1].transaction
    assert tx is not None
    return tx.id


async def test_a_running_transaction_with_every_message_delivered_is_ongoing_with_an_empty_queue(tmp_path: Path) -> None:
    async with rig_on_dev_csms("201", tmp_path / "station.db") as rig:
        tx_id = await started_transaction(rig)
        await rig.wait_outbox_empty()
        answer = await rig.csms.call("CP", "GetTransactionStatus", {"transactionId": tx_id})
    assert answer == {"ongoingIndicator": True, "messagesInQueue": False}


async def test_an_ended_transaction_is_not_ongoing(tmp_path: Path) -> None:
    async with rig_on_dev_csms("201", tmp_path / "station.db") as rig:
        tx_id = await started_transaction(rig)
        assert rig.core is not None and rig.core.request_stop(tx_id)
        await rig.wait_outbox_empty()
        answer = await rig.csms.call("CP", "GetTransactionStatus", {"transactionId": tx_id})
    assert answer == {"ongoingIndicator": False, "messagesInQueue": False}


async def test_an_unknown_transaction_is_neither_ongoing_nor_queued(tmp_path: Path) -> None:
    async with rig_on_dev_csms("201", tmp_path / "station.db") as rig:
        answer = await rig.csms.call("CP", "GetTransactionStatus", {"transactionId": "no-such-transaction"})
    assert answer == {"ongoingIndicator": False, "messagesInQueue": False}


async def test_undelivered_messages_are_reported_for_the_transaction_and_without_an_id(tmp_path: Path) -> None:
    def refuse(_: Received) -> dict[str, object]:
        raise InternalError(description="CSMS database down")

    async with DevCsms() as csms:
        rig = Rig("201", csms, tmp_path / "station.db")
        seed = Store(rig.db)
        seed.put("ocpp:TransactionMessageRetryInterval", 3600)  # the refused Started waits in the queue
        seed.close()
        await rig.start()
        try:
            await csms.wait_for("StatusNotification", timeout=10)
            assert (await csms.call("CP", "GetTransactionStatus", {})) == {"messagesInQueue": False}
            csms.override("TransactionEvent", refuse)
            tx_id = await started_transaction(rig)
            await csms.wait_for("TransactionEvent", timeout=10)
            await eventually(lambda: rig.core is not None and rig.core.store.outbox_depth() >= 1)
            for_tx = await csms.call("CP", "GetTransactionStatus", {"transactionId": tx_id})
            any_tx = await csms.call("CP", "GetTransactionStatus", {})
        finally:
            await rig.stop()
    assert for_tx == {"ongoingIndicator": True, "messagesInQueue": True}
    assert any_tx == {"messagesInQueue": True}
