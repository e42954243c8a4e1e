"""The one-CALL-in-flight slot: live calls overtake a waiting backlog, the backlog keeps its order."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from station.core.clock import Clock
from station.core.store import Store
from station.devtools.csms import DevCsms, Received
from station.ocpp.callslot import CallSlot
from tests.bench.workload import event_index, queue_transaction_events
from tests.ocpp_helpers import Rig, eventually


async def _turns(slot: CallSlot, order: list[str], name: str, *, queued: bool) -> None:
    async with slot.hold(queued=queued):
        order.append(name)
        await asyncio.sleep(0)


async def test_a_live_call_takes_the_slot_before_queued_calls_that_asked_earlier() -> None:
    slot, order = CallSlot(), []
    await slot.acquire(queued=True)  # a backlog message in flight
    waiting = [asyncio.create_task(_turns(slot, order, f"queued{k}", queued=True)) for k in range(3)]
    await asyncio.sleep(0)
    live = asyncio.create_task(_turns(slot, order, "live", queued=False))
    await asyncio.sleep(0)
    slot.release()
    await asyncio.gather(*waiting, live)
    assert order == ["live", "queued0", "queued1", "queued2"]


async def test_queued_calls_keep_their_order_and_the_slot_is_free_afterwards() -> None:
    slot, order = CallSlot(), []
    tasks = [asyncio.create_task(_turns(slot, order, str(k), queued=True)) for k in range(5)]
    await asyncio.gather(*tasks)
    assert order == ["0", "1", "2", "3", "4"]
    assert not slot.locked()


async def test_a_caller_that_releases_and_asks_again_goes_behind_the_waiters() -> None:
    slot, order = CallSlot(), []
    await slot.acquire()
    other = asyncio.create_task(_turns(slot, order, "other", queued=False))
    await asyncio.sleep(0)
    slot.release()
    await slot.acquire()  # no barging: "other" was handed the slot first
    order.append("again")
    slot.release()
    await other
    assert order == ["other", "again"]


async def test_a_live_caller_asking_again_at_once_goes_before_waiting_queued_calls() -> None:
    slot, order = CallSlot(), []
    await slot.acquire()  # a status in flight; the outbox waits behind it
    queued = asyncio.create_task(_turns(slot, order, "queued", queued=True))
    await asyncio.sleep(0)
    slot.release()
    await slot.acquire()  # the relay's next status, without a loop turn in between
    order.append("live again")
    slot.release()
    await queued
    assert order == ["live again", "queued"]


async def test_a_queued_call_gets_a_released_slot_when_no_live_call_asks() -> None:
    slot = CallSlot()
    await slot.acquire()
    queued = asyncio.create_task(slot.acquire(queued=True))
    await asyncio.sleep(0)
    slot.release()
    await asyncio.wait_for(queued, 1)
    assert slot.locked()
    slot.release()
    await asyncio.sleep(0)
    assert not slot.locked()


async def test_a_cancelled_waiter_neither_holds_nor_blocks_the_slot() -> None:
    slot = CallSlot()
    await slot.acquire()
    cancelled = asyncio.create_task(slot.acquire())
    behind = asyncio.create_task(slot.acquire(queued=True))
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.sleep(0)
    slot.release()
    await asyncio.wait_for(behind, 1)
    slot.release()
    assert not slot.locked()


async def test_a_waiter_cancelled_just_as_it_is_handed_the_slot_passes_it_on() -> None:
    slot = CallSlot()
    await slot.acquire()
    first = asyncio.create_task(slot.acquire())
    second = asyncio.create_task(slot.acquire())
    await asyncio.sleep(0)
    slot.release()  # handed to `first`, which has not run yet
    first.cancel()
    await asyncio.wait_for(second, 1)
    assert slot.locked()
    slot.release()
    assert not slot.locked()


async def test_a_status_notification_overtakes_a_draining_backlog_without_reordering_it(tmp_path: Path) -> None:
    """40 queued events draining; a slow Heartbeat holds the slot, so the outbox waits for it; an
    EV plugs in meanwhile: its StatusNotification goes right after the Heartbeat, before the
    outbox message that was waiting longer."""
    db = tmp_path / "station.db"
    store = Store(db)
    queue_transaction_events(store, Clock(trusted=True), 40)
    store.close()
    async with DevCsms() as csms:
        async def slow(_: Received) -> dict[str, Any]:
            await asyncio.sleep(0.3)
            return {"currentTime": "2026-01-01T00:00:00Z"}

        csms.override("Heartbeat", slow)
        rig = await Rig("201", csms, db).start()
        try:
            await eventually(lambda: len(csms.calls("TransactionEvent")) >= 3, 20)
            assert rig.esp is not None and rig.client is not None and rig.client.session is not None
            heartbeat = asyncio.create_task(rig.client.session.send_heartbeat())
            mark = csms.mark()
            sent = await csms.wait_for("Heartbeat", since=mark, timeout=5)
            await asyncio.sleep(0.1)  # the outbox is waiting for the slot now
            rig.esp.plug()
            status = await csms.wait_for("StatusNotification", predicate=lambda r: r.payload["connectorStatus"] == "Occupied",
                                         since=mark, timeout=10)
            await heartbeat
            between = [r.action for r in csms.received[csms.received.index(sent):csms.received.index(status)] if r.kind == "call"]
            assert between == ["Heartbeat"]
            await rig.wait_outbox_empty(30)
        finally:
            await rig.stop()
    indices = [event_index(r.action, r.payload) for r in csms.calls("TransactionEvent")]
    assert [i for i in indices if i is not None] == list(range(40))


async def test_status_changes_in_a_row_go_out_back_to_back_while_a_backlog_drains(tmp_path: Path) -> None:
    """The relay sends the next status as soon as the previous one is answered, before the
    outbox message that was waiting for the slot meanwhile."""
    db = tmp_path / "station.db"
    store = Store(db)
    queue_transaction_events(store, Clock(trusted=True), 40)
    store.close()
    async with DevCsms() as csms:
        async def slow(_: Received) -> dict[str, Any]:
            await asyncio.sleep(0.3)
            return {}

        rig = await Rig("201", csms, db).start()
        try:
            await eventually(lambda: len(csms.calls("TransactionEvent")) >= 3, 20)
            csms.override("StatusNotification", slow)
            assert rig.esp is not None
            mark = csms.mark()
            rig.esp.plug()
            first = await csms.wait_for("StatusNotification", predicate=lambda r: r.payload["connectorStatus"] == "Occupied",
                                        since=mark, timeout=10)
            rig.esp.unplug()  # while the Occupied one waits for its answer
            second = await csms.wait_for("StatusNotification", predicate=lambda r: r.payload["connectorStatus"] == "Available",
                                         since=mark, timeout=10)
            between = [r.action for r in csms.received[csms.received.index(first):csms.received.index(second)]
                       if r.kind == "call"]
            assert between == ["StatusNotification"]
            csms.override("StatusNotification", None)
            await rig.wait_outbox_empty(30)
        finally:
            await rig.stop()
    indices = [event_index(r.action, r.payload) for r in csms.calls("TransactionEvent")]
    assert [i for i in indices if i is not None] == list(range(40))
