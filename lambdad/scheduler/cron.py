"""Cron schedules: validation and next run times (pure, over cronsim), and the rows.

cronsim parses 5-field expressions and 6-field ones with seconds first, and handles
daylight-saving changes as Debian's cron does (a skipped local time runs once at the
first valid time after it; a repeated one runs once).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from lambdad.errors import InvalidArgument
from lambdad.jsontext import parse_json

OVERLAP_POLICIES = ("skip", "allow", "replace")
MAX_DATA_BYTES = 64 * 1024


@dataclass(frozen=True)
class Schedule:
    id: str
    function: str
    cron: str
    tz: str
    data: bytes  # a JSON object
    overlap: str
    created_at: float
    last_run: float | None = None
    last_result: str = ""
    last_invocation: str = ""


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidArgument(f"unknown time zone {name!r} (use an IANA name such as "
                              "Europe/Berlin or UTC)") from None


def validate(cron: str, tz: str, data: bytes, overlap: str) -> None:
    """Raises InvalidArgument with the parser's message; nothing is saved before this."""
    if overlap not in OVERLAP_POLICIES:
        raise InvalidArgument(f"overlap must be one of {', '.join(OVERLAP_POLICIES)}")
    if len(cron) > 200:
        raise InvalidArgument("cron expression is too long")
    try:
        CronSim(cron, datetime.now(zone(tz)))
    except CronSimError as exc:
        raise InvalidArgument(f"invalid cron expression {cron!r}: {exc}") from None
    if len(data) > MAX_DATA_BYTES:
        raise InvalidArgument(f"--data is larger than {MAX_DATA_BYTES} bytes")
    value = parse_json(data or b"{}", "--data")
    if not isinstance(value, dict):
        raise InvalidArgument("--data must be a JSON object")


def next_runs(cron: str, tz: str, after: float, count: int) -> list[float]:
    start = datetime.fromtimestamp(after, zone(tz))
    return [when.timestamp() for when in islice(CronSim(cron, start), count)]


def previous_run(cron: str, tz: str, before: float) -> float | None:
    start = datetime.fromtimestamp(before, zone(tz))
    for when in CronSim(cron, start, reverse=True):
        return when.timestamp()
    return None


def event_payload(schedule: Schedule, scheduled_time: float, *, catch_up: bool) -> bytes:
    """The --data object plus where the event came from, as AWS's scheduled events say."""
    payload = parse_json(schedule.data or b"{}", f"the data of schedule {schedule.id}")
    payload.update({
        "source": "lambda.schedule",
        "schedule_id": schedule.id,
        "scheduled_time": datetime.fromtimestamp(scheduled_time).astimezone(
            zone(schedule.tz)).isoformat(),
    })
    if catch_up:
        payload["catch_up"] = True
    return json.dumps(payload).encode()
