"""Cron across a cluster (issue 18): 20 schedules firing every second on three real lambdad
nodes sharing one PostgreSQL, the leader killed -9 midway and restarted later. Every tick
of the window must have fired exactly once: one `schedule_fires` row and one invocation
whose event carries that tick as its scheduled_time. The leader alone runs cron; a new
leader fires every tick missed since the last fire row; the (schedule, tick) key refuses
any tick fired twice. Schedules are created through different nodes: each is announced,
so the leader's runner takes it wherever it was made."""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cluster import Cluster
from tests.support.daemon import wait_for
from tests.support.postgres import Postgres

pytestmark = pytest.mark.slow

SCHEDULES = 20
KILL_AT = 40.0  # seconds into the window
RESTART_AT = 55.0
WINDOW = 95.0
HANDLER = "def handler(event, context):\n    return {'ok': True}\n"


@pytest.fixture(scope="module")
def cluster(postgres: Postgres) -> Iterator[Cluster]:
    with Cluster(postgres, 3, down_after=3) as nodes:
        yield nodes


def _fires(cluster: Cluster, start: int, end: int) -> Counter[tuple[str, int]]:
    rows = cluster.sql(f"SELECT schedule_id || ' ' || tick FROM schedule_fires "
                       f"WHERE tick BETWEEN {start} AND {end}")
    return Counter((line.split()[0], int(line.split()[1])) for line in rows.splitlines() if line)


def _invocations(cluster: Cluster, start: int, end: int) -> Counter[tuple[str, int]]:
    rows = cluster.sql(
        "SELECT e->>'schedule_id' || ' ' || "
        "round(extract(epoch FROM (e->>'scheduled_time')::timestamptz))::bigint "
        "FROM (SELECT convert_from(payload, 'UTF8')::json AS e FROM invocations "
        "WHERE source = 'schedule') s")
    found: Counter[tuple[str, int]] = Counter()
    for line in rows.splitlines():
        if line:
            sid, tick = line.split()
            if start <= int(tick) <= end:
                found[(sid, int(tick))] += 1
    return found


def test_every_tick_fires_exactly_once_through_a_leader_kill_and_restart(
        cluster: Cluster, tmp_path: Path) -> None:
    folder = tmp_path / "ticks"
    folder.mkdir()
    (folder / "handler.py").write_text(HANDLER)
    (folder / "lambda.toml").write_text(
        'name = "ticks"\ntimeout = 10\n[scaling]\nconcurrency = 16\nmax_instances = 1\n')
    assert cluster[0].deploy(folder).code == 0
    ids = []
    for i in range(SCHEDULES):  # through every node: the leader learns each by NOTIFY
        made = cluster[i % 3].cli("schedule", "ticks", "--cron", "* * * * * *",
                                  "--overlap", "allow")
        assert made.code == 0, made.stderr
        ids.append(made.stdout.strip())
    start = math.ceil(time.time()) + 2
    # every schedule fires on the leader from the window's start
    assert wait_for(lambda: {s for s, _ in _fires(cluster, start, start + 5)} == set(ids), 15)

    leader = cluster.leader()
    assert leader is not None
    killed = int(leader.removeprefix("n"))
    time.sleep(max(0.0, start + KILL_AT - time.time()))
    cluster.kill(killed)
    assert wait_for(lambda: cluster.leader() not in (None, leader), 15)  # another took over
    time.sleep(max(0.0, start + RESTART_AT - time.time()))
    cluster.restart(killed)
    end = start + int(WINDOW)
    time.sleep(max(0.0, end + 3 - time.time()))

    expected = {(sid, tick) for sid in ids for tick in range(start, end + 1)}
    fires = _fires(cluster, start, end)
    missing = expected - set(fires)
    assert not missing, f"{len(missing)} ticks never fired, e.g. {sorted(missing)[:5]}"
    assert set(fires) == expected and set(fires.values()) == {1}
    invocations = _invocations(cluster, start, end)
    assert set(invocations) == expected, sorted(expected - set(invocations))[:5]
    twice = {k: n for k, n in invocations.items() if n != 1}
    assert not twice, f"ticks queued more than once: {sorted(twice.items())[:5]}"
    # the fire rows name the nodes that fired: the old leader, then another
    nodes = cluster.sql(f"SELECT DISTINCT node FROM schedule_fires WHERE tick BETWEEN "
                        f"{start} AND {end}").split()
    assert len(nodes) >= 2
