"""Cron schedules: seconds-level firing, overlap policies, validation, catch-up, cleanup."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.support.daemon import Lambdad

pytestmark = pytest.mark.slow

SLOW = (
    "import time\n\n"
    "def handler(event, context):\n"
    "    print('run', event.get('scheduled_time'), event.get('catch_up', False))\n"
    "    time.sleep(float(event.get('sleep', 0)))\n"
    "    return event\n"
)


def _deploy(daemon: Lambdad, tmp_path: Path, name: str) -> None:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "handler.py").write_text(SLOW)
    (folder / "lambda.toml").write_text(
        f'name = "{name}"\ntimeout = 30\n[scaling]\nconcurrency = 4\nmax_instances = 2\n')
    daemon.deploy(folder)


def _schedule(daemon: Lambdad, name: str, *args: str) -> str:
    result = daemon.cli("schedule", name, *args)
    assert result.code == 0, result.stderr
    assert "next runs:" in result.stderr
    return result.stdout.strip()


def _invocations(daemon: Lambdad, name: str) -> list[dict[str, object]]:
    result = daemon.cli("invocations", name, "-o", "json")
    assert result.code == 0, result.stderr
    return list(result.json())


def test_seconds_level_schedule_fires_with_the_event_shape(
    lambdad: Lambdad, tmp_path: Path
) -> None:
    _deploy(lambdad, tmp_path, "ticker")
    schedule_id = _schedule(lambdad, "ticker", "--cron", "*/2 * * * * *", "--data",
                            '{"hello": "world"}', "--overlap", "allow")
    deadline = time.monotonic() + 20
    while len([i for i in _invocations(lambdad, "ticker") if i["status"] == "succeeded"]) < 2:
        assert time.monotonic() < deadline, "the schedule did not fire twice in 20 s"
        time.sleep(0.5)
    done = next(i for i in _invocations(lambdad, "ticker") if i["status"] == "succeeded")
    event = done["result"]  # the handler's JSON return value, parsed
    assert event["hello"] == "world" and event["source"] == "lambda.schedule"
    assert event["schedule_id"] == schedule_id and "scheduled_time" in event
    assert done["source"] == "schedule"
    listed = lambdad.cli("schedules", "ticker", "-o", "json").json()
    assert listed[0]["id"] == schedule_id and listed[0]["last_result"] == "enqueued"
    assert listed[0]["next_runs"][0] is not None
    assert lambdad.cli("unschedule", schedule_id[:6]).code == 0
    assert lambdad.cli("schedules", "ticker", "-o", "json").json() == []


@pytest.mark.parametrize("overlap", ["skip", "allow", "replace"])
def test_overlap_policies_with_a_run_longer_than_the_interval(
    lambdad: Lambdad, tmp_path: Path, overlap: str
) -> None:
    name = f"overlap-{overlap}"
    _deploy(lambdad, tmp_path, name)
    schedule_id = _schedule(lambdad, name, "--cron", "*/2 * * * * *", "--data",
                            '{"sleep": 5}', "--overlap", overlap)
    time.sleep(7)
    lambdad.cli("unschedule", schedule_id)
    runs = _invocations(lambdad, name)
    statuses = [i["status"] for i in runs]
    if overlap == "skip":
        # Runs due while the previous one was still going were skipped: never two at once.
        assert 1 <= len(runs) <= 2, runs
        ordered = sorted(runs, key=lambda i: str(i["created_at"]))
        if len(ordered) == 2:
            assert str(ordered[1]["created_at"]) >= str(ordered[0]["finished_at"])
        assert "schedule skipped" in lambdad.log()
    elif overlap == "allow":
        assert len(runs) >= 3 and statuses.count("running") >= 2, statuses
    else:
        replaced = [i for i in runs if "replaced by a newer run" in str(i["last_error"])]
        assert len(runs) >= 3 and len(replaced) >= 2, runs
        assert statuses.count("running") + statuses.count("queued") <= 1


def test_invalid_cron_and_time_zone_are_rejected(lambdad: Lambdad, tmp_path: Path) -> None:
    _deploy(lambdad, tmp_path, "strict")
    bad_cron = lambdad.cli("schedule", "strict", "--cron", "61 * * * *")
    assert bad_cron.code == 5 and "invalid cron expression" in bad_cron.stderr
    assert "Bad minute" in bad_cron.stderr  # the parser's own message
    bad_tz = lambdad.cli("schedule", "strict", "--cron", "* * * * *", "--tz", "Mars/Olympus")
    assert bad_tz.code == 5 and "unknown time zone" in bad_tz.stderr
    bad_data = lambdad.cli("schedule", "strict", "--cron", "* * * * *", "--data", "[1]")
    assert bad_data.code == 5
    assert lambdad.cli("schedules", "strict", "-o", "json").json() == []


def test_schedules_persist_catch_up_after_downtime_and_go_with_their_function(
    fresh_lambdad: Lambdad, tmp_path: Path
) -> None:
    daemon = fresh_lambdad
    _deploy(daemon, tmp_path, "nightly")
    schedule_id = _schedule(daemon, "nightly", "--cron", "*/3 * * * * *")
    time.sleep(1)
    daemon.stop(signal.SIGKILL)
    time.sleep(4)  # at least one run is missed while the daemon is down
    daemon.start()
    assert "catch_up=true" in daemon.log()
    listed = daemon.cli("schedules", "-o", "json").json()
    assert [s["id"] for s in listed] == [schedule_id]
    deadline = time.monotonic() + 15
    while not any(i["payload"].get("catch_up")
                  for i in _invocations(daemon, "nightly")):
        assert time.monotonic() < deadline
        time.sleep(0.3)
    assert daemon.cli("delete", "nightly").code == 0
    assert daemon.cli("schedules", "-o", "json").json() == []
