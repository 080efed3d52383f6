"""The shared PostgreSQL goes away under load and comes back (issue 18), with two real
lambdad nodes: requests to warm instances through A and B keep being answered 200 all
along (routing, keys and admission live in memory); a control call during the outage
fails with UNAVAILABLE's exit code and a message naming the database without its
password; every event answered 202 before or after the outage is delivered; no node is
marked down for it (observers restart their silence clocks) and cron fires again after
it on the (re-elected) leader."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lambdactl.exitcodes import REASON_EXIT
from lambdad.errors import DatabaseUnavailable
from tests.support.cluster import Cluster
from tests.support.daemon import Lambdad, wait_for
from tests.support.postgres import PASSWORD, Postgres

pytestmark = pytest.mark.slow

OUTAGE_S = 4.0
EVENTS = 20  # before the outage, and again after it
HANDLER = ("def handler(event, context):\n"
           "    return {'n': event.get('n') if isinstance(event, dict) else None}\n")


@pytest.fixture(scope="module")
def cluster(postgres: Postgres) -> Iterator[Cluster]:
    # The URL with a password, so that the test can look for it in what a node prints.
    nodes = Cluster(postgres, 2, down_after=3)
    for node in nodes.nodes:  # (the last --database wins)
        node.extra_args += ["--database", postgres.url(nodes.db, password=True)]
    nodes.start()
    try:
        yield nodes
    finally:
        nodes.close()


def _event(node: Lambdad, n: int) -> int:
    return node.http("steady", method="POST", body=json.dumps({"n": n}).encode(),
                     headers={"Lambda-Invocation-Type": "Event",
                              "Content-Type": "application/json"}).status


class Load(threading.Thread):
    """Warm requests through one node until stopped; keeps every status."""

    def __init__(self, node: Lambdad) -> None:
        super().__init__(daemon=True)
        self.node = node
        self.statuses: list[int] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                self.statuses.append(self.node.http("steady", timeout=10).status)
            except OSError:
                self.statuses.append(-1)
            time.sleep(0.02)


def test_a_database_restart_under_load_loses_nothing(cluster: Cluster, postgres: Postgres,
                                                     tmp_path: Path) -> None:
    a, b = cluster[0], cluster[1]
    folder = tmp_path / "steady"
    folder.mkdir()
    (folder / "handler.py").write_text(HANDLER)
    (folder / "lambda.toml").write_text(
        'name = "steady"\ntimeout = 10\n[scaling]\nconcurrency = 8\nmax_instances = 2\n'
        'min_instances = 1\n')
    a.deploy(folder)
    for node in (a, b):  # warm on both nodes
        assert wait_for(lambda node=node: node.http("steady").status == 200, 60)
    made = b.cli("schedule", "steady", "--cron", "* * * * * *", "--overlap", "allow")
    assert made.code == 0, made.stderr
    schedule_id = made.stdout.strip()

    accepted = [n for n in range(EVENTS) if _event(a if n % 2 else b, n) == 202]
    assert len(accepted) == EVENTS
    loads = [Load(a), Load(b)]
    for load in loads:
        load.start()
    time.sleep(1)

    postgres.halt()
    try:
        time.sleep(1)
        during = a.cli("invocations", "steady")
        time.sleep(OUTAGE_S)
        served_during = [len(load.statuses) for load in loads]
    finally:
        postgres.resume()
    back_at = time.time()
    assert during.code == REASON_EXIT[DatabaseUnavailable.reason], (during.code, during.stderr)
    assert "database" in during.stderr and PASSWORD not in during.stderr + during.stdout
    assert "***" in during.stderr  # the URL, redacted

    assert wait_for(lambda: all(n.cli("invocations", "steady").code == 0 for n in (a, b)), 30)
    accepted += [n for n in range(EVENTS, 2 * EVENTS) if _event(a if n % 2 else b, n) == 202]
    time.sleep(2)
    for load in loads:
        load.halt.set()
        load.join(15)

    # warm requests were served all along, through both nodes
    for load, before in zip(loads, served_during, strict=True):
        assert set(load.statuses) == {200}, sorted(set(load.statuses))
        assert before > 10
    assert len(accepted) == 2 * EVENTS

    def delivered() -> set[int]:
        rows = cluster.sql("SELECT convert_from(payload, 'UTF8') FROM invocations WHERE "
                           "function = 'steady' AND source <> 'schedule' "
                           "AND status = 'succeeded'")
        return {json.loads(line)["n"] for line in rows.splitlines() if line}

    assert wait_for(lambda: set(accepted) <= delivered(), 60), set(accepted) - delivered()
    # cron fires again after the outage
    assert wait_for(lambda: int(cluster.sql(
        f"SELECT count(*) FROM schedule_fires WHERE schedule_id = '{schedule_id}' "
        f"AND tick > {int(back_at) + 1}")) >= 3, 30)
    # nobody was marked down for the outage
    assert set(cluster.states().values()) == {"up"}
    for node in (a, b):
        assert "marked down" not in node.log() and "was marked" not in node.log()
    assert PASSWORD not in a.log() + b.log()
