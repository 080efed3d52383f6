"""Cron validation, next runs across daylight-saving changes, and the event payload."""

from __future__ import annotations

import itertools
import json
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from lambdad.errors import InvalidArgument
from lambdad.scheduler.cron import Schedule, event_payload, next_runs, previous_run, validate

BERLIN = ZoneInfo("Europe/Berlin")


def _ts(*args: int) -> float:
    return datetime(*args, tzinfo=BERLIN).timestamp()


@pytest.mark.parametrize(
    ("cron", "tz", "data", "overlap", "message"),
    [
        ("61 * * * *", "UTC", b"{}", "skip", "Bad minute"),
        ("* * *", "UTC", b"{}", "skip", "invalid cron expression"),
        ("* * * * *", "Nowhere/City", b"{}", "skip", "unknown time zone"),
        ("* * * * *", "UTC", b"[1]", "skip", "JSON object"),
        ("* * * * *", "UTC", b"not json", "skip", "--data must be JSON"),
        ("* * * * *", "UTC", b"[" * 60_000, "skip", "nested too deeply"),
        ("* * * * *", "UTC", b"{}", "sometimes", "overlap must be"),
    ],
)
def test_invalid_schedules_are_refused(cron: str, tz: str, data: bytes, overlap: str,
                                       message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        validate(cron, tz, data, overlap)


def test_valid_five_and_six_field_expressions() -> None:
    validate("0 * * * *", "Europe/Berlin", b'{"a": 1}', "replace")
    runs = next_runs("*/2 * * * * *", "UTC", 1_000_000_000.0, 3)
    assert [b - a for a, b in itertools.pairwise(runs)] == [2.0, 2.0]


def test_daylight_saving_as_debian_cron() -> None:
    # 2026-03-29: 02:00-03:00 does not exist in Berlin; a 02:30 job runs at 03:00 once.
    runs = next_runs("30 2 * * *", "Europe/Berlin", _ts(2026, 3, 29, 0, 0), 2)
    assert runs[0] == _ts(2026, 3, 29, 3, 0)
    assert runs[1] == _ts(2026, 3, 30, 2, 30)
    # 2026-10-25: 02:00-03:00 happens twice; the job runs once.
    autumn = next_runs("30 2 * * *", "Europe/Berlin", _ts(2026, 10, 25, 0, 0), 2)
    assert autumn[1] - autumn[0] > 23 * 3600


def test_previous_run() -> None:
    assert previous_run("0 * * * *", "UTC", 7200.0 + 60) == 7200.0


def test_event_payload_merges_data_and_origin() -> None:
    schedule = Schedule(id="abc", function="f", cron="* * * * *", tz="UTC",
                        data=b'{"k": "v"}', overlap="skip", created_at=0.0)
    payload = json.loads(event_payload(schedule, 60.0, catch_up=True))
    assert payload == {"k": "v", "source": "lambda.schedule", "schedule_id": "abc",
                       "scheduled_time": "1970-01-01T00:01:00+00:00", "catch_up": True}
