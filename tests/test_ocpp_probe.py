"""`station --once` asks the running daemon for a probe: a fresh Heartbeat and StatusNotification on its
own connection, with their evidence. A daemon that has been up for a while must still give it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.ocpp_helpers import rig_on_dev_csms


@pytest.mark.parametrize("version", ["201", "16"])
async def test_the_probe_reports_its_messages_after_the_evidence_log_filled_up(tmp_path: Path, version: str) -> None:
    async with rig_on_dev_csms(version, tmp_path / "station.db") as rig:
        assert rig.client is not None and rig.client.session is not None
        kept = rig.client.exchanges.maxlen or 0
        for _ in range(kept + 5):  # hours of heartbeats and meter values on a real station
            await rig.client.session.send_heartbeat()
        result = await rig.client.probe()
    actions = [m["action"] for m in result["messages"]]
    assert "error" not in result
    assert actions[0] == "BootNotification" and {"Heartbeat", "StatusNotification"} <= set(actions[1:]), actions
