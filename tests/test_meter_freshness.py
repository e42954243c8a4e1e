"""One rule for "the energy meter does not answer" (station.core.meter_freshness), applied to the real core:
the daemon's verdict, which /status, the status page, `station status` and `--once` all show."""

from __future__ import annotations

from station.core.meter_freshness import MeterFreshness, stale_after
from station.core.station import StationCore
from tests.core_helpers import RecordingController, core, esp, settle, store  # noqa: F401 — fixtures

assert settle and store


def test_a_meter_that_needs_every_retry_still_counts_as_answering() -> None:
    # Poll every 1 s; 3 tries of 1 s on each of 2 register blocks: the third try's reading can be 7 s after the last.
    assert stale_after(poll_interval_s=1.0, timeout_s=1.0, retries=2, blocks=2) == 7.0
    freshness = MeterFreshness(limit_s=7.0)
    freshness.reading(100.0)
    assert freshness.silence(107.0) is None


def test_a_reading_older_than_the_limit_means_the_meter_does_not_answer() -> None:
    freshness = MeterFreshness(limit_s=7.0)
    freshness.reading(100.0)
    assert freshness.silence(107.5) == ("no valid reading for more than 7 s (a meter that answers gives one at least "
                                        "that often)")


def test_a_meter_silent_since_polling_started_does_not_answer_once_the_limit_has_passed() -> None:
    freshness = MeterFreshness(limit_s=7.0)
    freshness.polling_started(50.0)
    assert freshness.silence(56.0) is None  # too early to tell
    assert freshness.silence(58.0) == "no valid reading since polling started, more than 7 s ago"


async def test_the_core_has_a_stale_meter_as_not_answering_before_any_failed_poll_count(
        core: StationCore, esp: RecordingController) -> None:
    freshness = MeterFreshness(limit_s=7.0)
    freshness.reading(100.0)
    freshness.apply(108.0, core)
    health = core.snapshot()["meter_health"]
    assert health["healthy"] is False and health["reason"].startswith("no valid reading for more than 7 s")
    assert core.connectors[1].derived.error_code == "PowerMeterFailure"  # what the CSMS is told


async def test_a_reading_after_a_stale_verdict_makes_the_core_say_the_meter_answers_again(core: StationCore) -> None:
    freshness = MeterFreshness(limit_s=7.0)
    freshness.reading(100.0)
    freshness.apply(108.0, core)
    freshness.reading(109.0, core)
    assert core.snapshot()["meter_health"]["healthy"] is True and core.meter_answers
