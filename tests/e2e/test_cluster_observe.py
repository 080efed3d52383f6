"""Observing a cluster through any node: two real lambdad nodes (A = n0, B = n1) on one
private PostgreSQL and one Docker engine, driven through the real CLI.

`logs` and `logs -f` through A fan out to B (over B's gRPC, with the cluster key) and
merge by time, each line tagged with the node that served it; `lambdactl nodes` shows
every node and a killed one down, then up after its restart; each node's /metrics has
its own `node` label; `stats` through A counts what B served once B flushed its rows
into the shared rollups.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime

import pytest

from tests.support.cluster import Cluster
from tests.support.daemon import ROOT, Lambdad, wait_for
from tests.support.metrics import scrape
from tests.support.postgres import Postgres

pytestmark = pytest.mark.slow

DOWN_AFTER = 3
HANDLER = ("def handler(event, context):\n"
           "    print('said ' + event['say'], flush=True)\n"
           "    return {'said': event['say']}\n")


@pytest.fixture(scope="module")
def cluster(postgres: Postgres) -> Iterator[Cluster]:
    with Cluster(postgres, 2, down_after=DOWN_AFTER) as nodes:
        yield nodes


@pytest.fixture(scope="module")
def talker(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A function that prints what it is told, deployed through A and known to B."""
    folder = tmp_path_factory.mktemp("talker")
    (folder / "handler.py").write_text(HANDLER)
    (folder / "lambda.toml").write_text('name = "talker"\nhandler = "handler.handler"\n')
    cluster[0].deploy(folder)
    assert wait_for(lambda: say(cluster[1], "warm-up-b") == 0, 60), cluster[1].log()[-3000:]
    assert say(cluster[0], "warm-up-a") == 0, cluster[0].log()[-3000:]
    return "talker"


def say(node: Lambdad, text: str) -> int:
    """`lambdactl invoke` through `node`: served by an instance on that node."""
    return node.cli("invoke", "talker", "--data", json.dumps({"say": text})).code


def log_lines(node: Lambdad, *args: str) -> list[dict[str, object]]:
    result = node.cli("-o", "json", "logs", "talker", *args)
    assert result.code == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


class Follow:
    """A running `lambdactl -o json logs -f talker` through one node, read line by line."""

    def __init__(self, node: Lambdad) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "lambdactl", "-o", "json", "logs", "talker", "-f",
             "--tail", "1"], env=node.env(), cwd=ROOT, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        self.lines: list[dict[str, object]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.strip():
                self.lines.append(json.loads(line))

    def saying(self, text: str) -> dict[str, object] | None:
        for entry in list(self.lines):
            if entry["message"] == f"said {text}":
                return entry
        return None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def test_logs_follow_through_a_shows_a_line_served_by_b_tagged_with_b(
        cluster: Cluster, talker: str) -> None:
    a, b = cluster[0], cluster[1]
    follow = Follow(a)
    try:
        # Until the stream is open on both nodes: a line B logs now reaches A's follower.
        probe = ""

        def streaming() -> bool:
            nonlocal probe
            probe = f"probe-{uuid.uuid4().hex[:8]}"
            assert say(b, probe) == 0
            return wait_for(lambda: follow.saying(probe) is not None, 3)

        assert wait_for(streaming, 60), (follow.lines, a.log()[-3000:])
        marker = f"from-b-{uuid.uuid4().hex[:8]}"
        assert say(b, marker) == 0
        assert wait_for(lambda: follow.saying(marker) is not None, 15), follow.lines
        entry = follow.saying(marker)
        assert entry is not None and entry["node"] == "n1", entry
        # A's own lines are in the same stream, tagged with A.
        mine = f"from-a-{uuid.uuid4().hex[:8]}"
        assert say(a, mine) == 0
        assert wait_for(lambda: follow.saying(mine) is not None, 15), follow.lines
        assert follow.saying(mine)["node"] == "n0"  # type: ignore[index]
        assert follow.process.poll() is None
    finally:
        follow.stop()


def test_logs_through_a_merges_both_nodes_lines_in_time_order(
        cluster: Cluster, talker: str) -> None:
    a, b = cluster[0], cluster[1]
    run = uuid.uuid4().hex[:6]
    said = []
    for i, node in enumerate([b, a, b, a]):
        text = f"{run}-{i}"
        assert say(node, text) == 0
        said.append(text)
    # Docker hands lines over a moment after the response.
    def merged() -> list[dict[str, object]]:
        return [e for e in log_lines(a) if str(e["message"]).startswith(f"said {run}-")]

    assert wait_for(lambda: len(merged()) == 4, 15), merged()
    lines = merged()
    assert [e["message"] for e in lines] == [f"said {t}" for t in said]
    assert [e["node"] for e in lines] == ["n1", "n0", "n1", "n0"]
    times = [datetime.fromisoformat(str(e["logged_at"]).replace("Z", "+00:00"))
             for e in log_lines(a)]
    assert times == sorted(times)
    # --tail counts across the nodes: the cluster's last two lines, not two per node.
    everything = log_lines(a)
    last = log_lines(a, "--tail", "2")
    assert [(e["message"], e["node"]) for e in last] == [
        (e["message"], e["node"]) for e in everything[-2:]]
    assert len(everything) > 4


def test_metrics_of_each_node_carry_its_node_label(cluster: Cluster, talker: str) -> None:
    for node, name in ((cluster[0], "n0"), (cluster[1], "n1")):
        samples = [line for line in scrape(node).splitlines()
                   if line and not line.startswith("#")]
        assert samples
        assert all(f'node="{name}"' in line for line in samples), [
            line for line in samples if f'node="{name}"' not in line][:5]
        assert any(line.startswith("lambdad_invocations_total{") and 'function="talker"' in
                   line for line in samples)


def test_stats_through_a_counts_the_invocations_b_served(cluster: Cluster,
                                                         talker: str) -> None:
    a, b = cluster[0], cluster[1]

    def invocations_5m(node: Lambdad) -> int:
        result = node.cli("-o", "json", "stats", "talker")
        assert result.code == 0, result.stderr
        data = json.loads(result.stdout)
        entry = data["functions"][0] if isinstance(data, dict) else data[0]
        windows = {w["window"]: w for w in entry["windows"]}
        return int(windows["5m"]["invocations"])

    before = invocations_5m(a)  # flushes A's own rows
    for i in range(3):
        assert say(b, f"counted-{i}") == 0
    # B's rows reach the shared table when B flushes (periodically; `stats` through B
    # flushes at once): then A counts them.
    assert invocations_5m(b) >= before + 3
    assert invocations_5m(a) >= before + 3


def test_nodes_shows_a_killed_node_down_then_up_after_restart(cluster: Cluster,
                                                             talker: str) -> None:
    a = cluster[0]

    def nodes() -> dict[str, dict[str, object]]:
        result = a.cli("-o", "json", "nodes")
        assert result.code == 0, result.stderr
        return {str(n["name"]): n for n in json.loads(result.stdout)}

    listed = nodes()
    assert {name: n["state"] for name, n in listed.items()} == {"n0": "up", "n1": "up"}
    assert listed["n0"]["self"] and not listed["n1"]["self"]
    assert sum(bool(n["leader"]) for n in listed.values()) == 1
    table = a.cli("nodes")
    assert table.code == 0 and "LAST SEEN" in table.stdout and "n1" in table.stdout
    cluster.kill(1)
    try:
        assert wait_for(lambda: nodes()["n1"]["state"] == "down", DOWN_AFTER + 10), nodes()
        # `logs` through A still answers, with A's lines, while B is down.
        assert log_lines(a)
    finally:
        cluster.restart(1)
    assert wait_for(lambda: nodes()["n1"]["state"] == "up", 15), nodes()
    # And B's lines are merged again once it is back.
    marker = f"after-restart-{uuid.uuid4().hex[:6]}"
    assert wait_for(lambda: say(cluster[1], marker) == 0, 60)
    assert wait_for(lambda: any(e["message"] == f"said {marker}" and e["node"] == "n1"
                                for e in log_lines(a)), 15)


def test_nodes_on_sqlite_is_this_daemon_alone(lambdad: Lambdad) -> None:
    result = lambdad.cli("-o", "json", "nodes")
    assert result.code == 0, result.stderr
    [only] = json.loads(result.stdout)
    assert only["state"] == "up" and only["self"] and only["leader"]
    assert only["id"] == lambdad.daemon_id
