"""The offline-replay benchmark's workload, small: every queued event reaches the CSMS once, in order."""

from __future__ import annotations

from pathlib import Path

import pytest

from station.core.clock import Clock
from station.core.store import Store
from station.devtools.csms import DevCsms
from tests.bench.workload import delivery_report, event_index, queue_transaction_events
from tests.ocpp_helpers import Rig


@pytest.mark.parametrize("version", ["201", "16"])
async def test_queued_events_replay_once_each_in_order_and_leave_the_outbox(tmp_path: Path, version: str) -> None:
    db = tmp_path / "station.db"
    store = Store(db)
    queue_transaction_events(store, Clock(trusted=True), 200)
    store.close()
    async with DevCsms() as csms:
        rig = await Rig(version, csms, db).start()
        try:
            await rig.wait_outbox_empty(timeout=30)
            received = [event_index(r.action, r.payload) for r in csms.calls(station_id=rig.station_id)]
        finally:
            await rig.stop()
    report = delivery_report(received, 200)
    assert report == {"expected": 200, "received": 200, "lost": 0, "duplicated": 0, "in_order": True}
