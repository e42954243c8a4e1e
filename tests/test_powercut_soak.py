"""Power cuts at random instants, the daemon's state directory on a file system that forgets what
was not synced (tests/powercut/soak.py has the scenario and the invariants).

`make test` cuts 10 times (8 more on security profile 3 during certificate renewals); `make soak` 100
(and 40). Where FUSE cannot be mounted the tests skip and say why.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.powercut.rig import require_fuse
from tests.powercut.soak import (
    firmware_cut_once_saved,
    log_upload_cut_while_uploading,
    run_power_cuts,
    run_renewal_power_cuts,
)

BOUNDED_CUTS = 10
SOAK_CUTS = 100
BOUNDED_RENEWAL_CUTS = 8
SOAK_RENEWAL_CUTS = 40


def assert_survived(figures) -> None:  # type: ignore[no-untyped-def]
    assert figures.problems == [], "\n".join(figures.problems[:20])
    assert (figures.lost, figures.duplicated, figures.forgotten, figures.failed_restarts, figures.lockouts) == (0, 0, 0, 0, 0)


async def test_power_cuts_at_random_instants_lose_no_event_and_forget_no_accepted_request(tmp_path: Path) -> None:
    require_fuse()
    figures = await run_power_cuts(tmp_path, BOUNDED_CUTS)
    assert figures.cuts >= BOUNDED_CUTS
    assert_survived(figures)


@pytest.mark.slow
async def test_soak_100_power_cuts_lose_no_event_and_forget_no_accepted_request(tmp_path: Path) -> None:
    require_fuse()
    figures = await run_power_cuts(tmp_path, SOAK_CUTS, area="power-cut soak")
    assert figures.cuts >= SOAK_CUTS
    assert_survived(figures)


async def test_power_cuts_during_certificate_renewals_never_lock_the_station_out(tmp_path: Path) -> None:
    """Security profile 3: after every cut the station logs in, with the newest certificate it accepted."""
    require_fuse()
    figures = await run_renewal_power_cuts(tmp_path, BOUNDED_RENEWAL_CUTS)
    assert figures.renewals >= 1
    assert_survived(figures)


@pytest.mark.slow
async def test_soak_40_power_cuts_during_certificate_renewals_never_lock_the_station_out(tmp_path: Path) -> None:
    require_fuse()
    figures = await run_renewal_power_cuts(tmp_path, SOAK_RENEWAL_CUTS, area="power-cut renewal soak")
    assert figures.renewals >= 1
    assert_survived(figures)


async def test_an_accepted_firmware_request_survives_a_power_cut_once_answered(tmp_path: Path) -> None:
    require_fuse()
    figures = await firmware_cut_once_saved(tmp_path)
    assert_survived(figures)
    assert figures.completed >= 1


async def test_the_soak_catches_a_firmware_request_saved_without_fsync(tmp_path: Path) -> None:
    """The deliberately broken variant: the same scenario with the request saved by a plain rename."""
    require_fuse()
    figures = await firmware_cut_once_saved(tmp_path, daemon_module="tests.powercut.plain_job_save",
                                            area="power-cut, plain job save (must be caught)")
    assert figures.forgotten == 1, figures.line()


async def test_the_soak_sees_lost_events_when_the_store_does_not_sync(tmp_path: Path) -> None:
    """The method sees loss when there is some: the same soak, sessions only, SQLite with synchronous=OFF."""
    require_fuse()
    figures = await run_power_cuts(tmp_path, 8, area="power-cut, SQLite unsynced (must be caught)",
                                   requests={"none": 1}, daemon_module="tests.powercut.sqlite_sync_off")
    assert figures.lost + figures.failed_restarts > 0, figures.line()


async def test_an_accepted_log_upload_is_completed_or_reported_failed_after_a_power_cut(tmp_path: Path) -> None:
    require_fuse()
    figures = await log_upload_cut_while_uploading(tmp_path)
    assert_survived(figures)
