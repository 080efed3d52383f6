"""Three real lambdad nodes (A, B, C) on one private PostgreSQL and one Docker engine,
driven through the real CLI and the real gateways, as issue 18 names it: deploy through
A, invoke through B and C; rollback through C, live on A within 1 s. Also here, because
they need a node that does not lead: `lambdactl schedules` through a non-leader shows the
next run the leader would (computed from the shared row and the cron expression), and a
`replace` schedule cancels its previous run on whatever node runs it (the `cancel`
announcement)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cluster import Cluster, tagged, within
from tests.support.daemon import Lambdad, wait_for
from tests.support.postgres import Postgres

pytestmark = pytest.mark.slow

WITHIN = 1.0  # the bound for a change to be live on every node


@pytest.fixture(scope="module")
def cluster(postgres: Postgres) -> Iterator[Cluster]:
    with Cluster(postgres, 3, down_after=3) as nodes:
        yield nodes




def _tag(node: Lambdad, name: str) -> object:
    answer = node.http(name, "/")
    return answer.json().get("tag") if answer.status == 200 else answer.status


def _invoked(node: Lambdad, name: str) -> object:
    """The tag `lambdactl invoke` through `node` answers."""
    result = node.cli("invoke", name, "--data", "{}")
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)["tag"]


def test_deploy_through_a_invoke_through_b_and_c_rollback_through_c_live_on_a(
        cluster: Cluster, tmp_path: Path) -> None:
    a, b, c = cluster[0], cluster[1], cluster[2]
    a.deploy(tagged(tmp_path / "one", "trio", "one"))
    for node in (b, c):  # each learns the deploy by NOTIFY, fetches the artifact, cold-starts
        assert wait_for(lambda n=node: _tag(n, "trio") == "one", 30), node.log()[-2000:]
        assert _invoked(node, "trio") == "one"
    a.deploy(tagged(tmp_path / "two", "trio", "two"))
    for node in (b, c):
        assert wait_for(lambda n=node: _tag(n, "trio") == "two", 30), node.log()[-2000:]
        assert _invoked(node, "trio") == "two"
    assert _tag(a, "trio") == "two"  # A warm on v2: the rollback must reach a running node

    rolled = c.cli("rollback", "trio")
    assert rolled.code == 0, rolled.stderr
    seconds = within(lambda: _tag(a, "trio") == "one", WITHIN)
    assert seconds is not None, f"the rollback through C was not live on A within {WITHIN} s"
    assert _tag(b, "trio") == "one" and _tag(c, "trio") == "one"
    assert _invoked(a, "trio") == "one"
    # every node served through its own instance (one Docker engine, three daemon ids)
    for node in (a, b, c):
        assert node.containers("trio"), f"{node.daemon_id} ran no instance of its own"
    assert a.cli("delete", "trio", "--yes").code == 0


SLOW = (
    "import time\n\n"
    "def handler(event, context):\n"
    "    print('begin', context.aws_request_id, flush=True)\n"
    "    time.sleep(float(event.get('sleep', 0)))\n"
    "    print('end', context.aws_request_id, flush=True)\n"
    "    return {'slept': event.get('sleep')}\n"
)


def _index(name: str) -> int:
    return int(name.removeprefix("n"))


def _busy(node: Lambdad, name: str) -> int:
    """The node's own instances of `name` serving a request now (`lambdactl get`)."""
    result = node.cli("get", name, "-o", "json")
    assert result.code == 0, result.stderr
    return int(result.json()["instances"]["busy"])


def test_a_replace_schedule_cancels_its_previous_run_on_the_node_running_it(
        cluster: Cluster, tmp_path: Path) -> None:
    """The leader delivers a run (60 s) itself; its session is then cut (it stops leading
    but keeps delivering), another node leads and fires the next tick, which replaces the
    run: the node running it stops its delivery (its instance is no longer busy). Before,
    only the row said failed; the old leader kept the run to its end."""
    folder = tmp_path / "slowpoke"
    folder.mkdir()
    (folder / "handler.py").write_text(SLOW)
    (folder / "lambda.toml").write_text(
        'name = "slowpoke"\ntimeout = 120\n[scaling]\nconcurrency = 1\nmax_instances = 3\n')
    cluster[0].deploy(folder)
    leader = cluster.leader()
    assert leader is not None
    old = cluster[_index(leader)]
    made = old.cli("schedule", "slowpoke", "--cron", "*/6 * * * * *", "--overlap", "replace",
                   "--data", '{"sleep": 60}')
    assert made.code == 0, made.stderr
    schedule_id = made.stdout.strip()

    def running_on_old() -> str:
        return cluster.sql(
            "SELECT id FROM invocations WHERE function = 'slowpoke' AND status = 'running' "
            f"AND owner_node = '{old.daemon_id}' LIMIT 1")

    try:
        assert wait_for(lambda: bool(running_on_old()), 20), cluster.sql(
            "SELECT id, status, owner_node FROM invocations WHERE function = 'slowpoke'")
        first = running_on_old()
        assert wait_for(lambda: f"begin {first}" in old.cli("logs", "slowpoke").stdout, 10)
        assert _busy(old, "slowpoke") == 1
        assert cluster.kill_session(_index(leader)) == 2
        assert wait_for(lambda: cluster.leader() not in (None, leader), 10), cluster.leader()
        new = cluster[_index(cluster.leader() or "")]
        assert wait_for(lambda: cluster.sql(
            f"SELECT status FROM invocations WHERE id = '{first}'") == "failed", 15)
        assert "replaced by a newer run" in cluster.sql(
            f"SELECT last_error FROM invocations WHERE id = '{first}'")
        assert new.daemon_id in cluster.sql(
            f"SELECT node FROM schedule_fires WHERE schedule_id = '{schedule_id}'").split()
        # The handler sleeps on for most of a minute: only the cancel frees its instance.
        # (Old may deliver a newer run meanwhile, in an instance busy for that one.)
        def others_on_old() -> int:
            return int(cluster.sql(
                "SELECT count(*) FROM invocations WHERE function = 'slowpoke' AND status = "
                f"'running' AND owner_node = '{old.daemon_id}' AND id <> '{first}'"))

        assert wait_for(lambda: _busy(old, "slowpoke") == others_on_old(), 5), \
            old.log()[-3000:]
        assert f"end {first}" not in old.cli("logs", "slowpoke").stdout
        assert f"async invocation {first} cancelled here" in old.log()
    finally:
        assert old.cli("unschedule", schedule_id).code == 0
        old.cli("delete", "slowpoke", "--yes")


def _listed(node: Lambdad, name: str) -> dict[str, tuple[object, object]]:
    """Schedule id -> (next run, last run) as `lambdactl schedules -o json` shows them."""
    result = node.cli("schedules", name, "-o", "json")
    assert result.code == 0, result.stderr
    return {s["id"]: ((s["next_runs"] or [None])[0], s["last_run_at"]) for s in result.json()}


def test_schedules_through_a_node_that_does_not_lead_show_the_leaders_next_and_last_run(
        cluster: Cluster, tmp_path: Path) -> None:
    """A node that does not lead runs no cron: before, it showed no next run for a schedule
    made elsewhere and a stale one (its creation's) for a schedule made through it."""
    leader_name = cluster.leader()
    assert leader_name is not None
    leader = cluster[_index(leader_name)]
    others = [n for i, n in enumerate(cluster.nodes) if i != _index(leader_name)]
    leader.deploy(tagged(tmp_path / "clock", "clock", "tick"))
    made = [node.cli("schedule", "clock", "--cron", "*/3 * * * * *", "--overlap", "allow")
            for node in (leader, others[0])]
    assert [m.code for m in made] == [0, 0], [m.stderr for m in made]
    ids = {m.stdout.strip() for m in made}
    try:
        # each has fired at least twice: the creation's next run is in the past now
        assert wait_for(lambda: all(last for _, last in _listed(leader, "clock").values())
                        and int(cluster.sql("SELECT count(*) FROM schedule_fires")) >= 4, 20)
        time.sleep(3)
        for node in others:
            for _attempt in range(3):  # a tick between the two listings moves both
                before = _listed(leader, "clock")
                seen = _listed(node, "clock")
                after = _listed(leader, "clock")
                if before == after:
                    break
            assert set(seen) == ids
            assert seen == before == after, (node.daemon_id, seen, before, after)
            assert all(next_run is not None for next_run, _ in seen.values())
        text = others[1].cli("schedules", "clock")
        assert text.code == 0 and all(i in text.stdout for i in ids), text.stdout
    finally:
        for schedule_id in ids:
            leader.cli("unschedule", schedule_id)
        leader.cli("delete", "clock", "--yes")
