"""Two real lambdad nodes (A, B) on one private PostgreSQL and one Docker engine, driven
through the real CLI and raw gRPC: changes made through one node are live on the other
within a second (API keys, delete, rollback), a revoked key ends the other node's open stream, a
node that was not listening reloads on reconnect, and a node killed -9 is `down` in the
nodes table within node_down_after + 2 s, then `up` again after its restart. A deploy
through A is served by B (which fetches the artifact, tests/e2e/test_cluster_artifacts.py
has the details) and a rollback through B is live on A within a second."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from lambdad.api.v1 import functions_pb2 as pb
from lambdad.api.v1 import functions_pb2_grpc as pb_grpc
from tests.e2e.test_key_scope import Follower
from tests.support.cluster import Cluster, tagged, within
from tests.support.daemon import FUNCTIONS, Lambdad, wait_for
from tests.support.postgres import Postgres

pytestmark = pytest.mark.slow

DOWN_AFTER = 3
WITHIN = 1.0  # the bound for a change to be live on every node


@pytest.fixture(scope="module")
def cluster(postgres: Postgres) -> Iterator[Cluster]:
    # A holds each reconnect 3 s (LAMBDAD_FAULT), so a test can change something while
    # A is not listening.
    nodes = Cluster(postgres, 2, down_after=DOWN_AFTER,
                    env={0: {"LAMBDAD_FAULT": "session-reconnect-delay"}}).start()
    try:
        yield nodes
    finally:
        nodes.close()


def _key(node: Lambdad, name: str, role: str = "invoker") -> str:
    result = node.cli("keys", "create", "--name", name, "--role", role)
    assert result.code == 0, result.stderr
    return result.stdout.strip()


def _accepted(node: Lambdad, key: str) -> bool:
    """One authenticated call over TCP (no CLI start-up in the timing)."""
    with grpc.insecure_channel(f"127.0.0.1:{node.grpc_port}") as channel:
        stub = pb_grpc.FunctionServiceStub(channel)
        try:
            stub.ListFunctions(pb.ListFunctionsRequest(),
                               metadata=(("authorization", f"Bearer {key}"),), timeout=5)
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAUTHENTICATED, exc
            return False
        return True



def test_a_key_created_through_a_works_on_b_within_a_second(cluster: Cluster) -> None:
    a, b = cluster[0], cluster[1]
    key = _key(a, "made-on-a")
    assert within(lambda: _accepted(b, key), WITHIN) is not None, b.log()[-2000:]
    assert _accepted(a, key)


def test_a_key_revoked_through_b_is_refused_on_a_and_ends_as_stream(
        cluster: Cluster) -> None:
    """Attack: a key revoked on one node must not keep working, nor keep an open
    `logs -f` streaming, on another node (before announcements, A kept both)."""
    a, b = cluster[0], cluster[1]
    a.deploy("greet", "--name", "tailed")
    key = _key(b, "tailer")
    assert wait_for(lambda: _accepted(a, key), 10)
    follower = Follower(a, key, "tailed")
    try:
        follower.wait_streaming(a, "tailed")
        revoked = b.cli("keys", "revoke", "tailer")
        assert revoked.code == 0, revoked.stderr
        assert within(lambda: not _accepted(a, key), WITHIN) is not None
        try:
            code = follower.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pytest.fail("A's `logs -f` with a key revoked through B was still streaming")
        stderr = follower.stderr()
        assert code == 77 and "API key revoked" in stderr, stderr
    finally:
        follower.stop()


def test_delete_through_b_of_a_function_on_a(cluster: Cluster) -> None:
    a, b = cluster[0], cluster[1]
    a.deploy("greet", "--name", "doomed")
    assert a.http("doomed", "/?name=x").status == 200
    assert a.containers("doomed")
    deleted = b.cli("delete", "doomed", "--yes")
    assert deleted.code == 0, deleted.stderr
    assert within(lambda: a.http("doomed", "/").status == 404, WITHIN) is not None
    assert wait_for(lambda: not a.containers("doomed"), 30)
    assert a.cli("get", "doomed").code != 0



def test_deploy_through_a_is_served_by_b_and_a_rollback_through_b_is_live_on_a(
        cluster: Cluster, tmp_path: Path) -> None:
    """Both nodes running: B learns each deploy from its announcement (and fetches the
    artifact at its first use); a rollback through B is live on A within a second."""
    a, b = cluster[0], cluster[1]
    a.deploy(tagged(tmp_path / "one", "flip", "one"))
    assert wait_for(lambda: b.http("flip", "/").status == 200, 30), b.log()[-2000:]
    assert b.http("flip", "/").json() == {"tag": "one"}
    a.deploy(tagged(tmp_path / "two", "flip", "two"))
    assert within(lambda: b.http("flip", "/").json() == {"tag": "two"}, 30) is not None
    assert a.http("flip", "/").json() == {"tag": "two"}
    rolled = b.cli("rollback", "flip")
    assert rolled.code == 0, rolled.stderr
    assert within(lambda: a.http("flip", "/").json() == {"tag": "one"}, WITHIN) is not None
    assert b.http("flip", "/").json() == {"tag": "one"}
    assert a.cli("delete", "flip", "--yes").code == 0


def test_deploys_of_one_function_through_two_nodes_run_one_after_the_other(
        cluster: Cluster) -> None:
    """Without the lock across nodes both would read "next version: 1" and one would
    fail on the version's primary key after its build."""
    from concurrent.futures import ThreadPoolExecutor

    a, b = cluster[0], cluster[1]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda n: n.cli("deploy", str(FUNCTIONS / "greet"),
                                                "--name", "raced"), (a, b)))
    assert [r.code for r in results] == [0, 0], [r.stderr for r in results]
    versions = cluster.sql("SELECT string_agg(number::text, ',' ORDER BY number) "
                           "FROM versions WHERE function = 'raced'")
    assert versions == "1,2"
    assert a.cli("delete", "raced", "--yes").code == 0


def test_a_change_made_while_a_was_not_listening_is_applied_after_its_reconnect(
        cluster: Cluster) -> None:
    a, b = cluster[0], cluster[1]
    listen = f"lambdad:{a.daemon_id}:listen"
    assert cluster.kill_session(0) == 2
    # A holds its reconnect for 3 s: make the change while it has no listen connection.
    key = _key(b, "made-while-away")
    assert cluster.sql("SELECT count(*) FROM pg_stat_activity "
                       f"WHERE application_name = '{listen}'") == "0", \
        "A was already listening again: the test would not prove the reload"
    assert not _accepted(a, key)
    assert wait_for(lambda: _accepted(a, key), 20), a.log()[-3000:]
    assert "cluster: session to" in a.log()


def test_a_stalled_node_is_marked_down_and_rejoins_by_itself(cluster: Cluster) -> None:
    """SIGSTOP (a stall, or a partition as its peers see it): marked down, its leftover
    connections terminated so it leads nothing; SIGCONT: it finds out and is up again,
    with the changes made meanwhile."""
    b = cluster[1]
    assert b.process is not None
    b.process.send_signal(signal.SIGSTOP)
    try:
        assert cluster.wait_state("n1", "down", DOWN_AFTER + 5), cluster.states()
        assert wait_for(lambda: cluster.leader() == "n0", 5)  # within a heartbeat or two
        assert cluster.sql("SELECT count(*) FROM pg_stat_activity WHERE application_name "
                           f"LIKE 'lambdad:{b.daemon_id}:%'") == "0"
        key = _key(cluster[0], "made-while-stalled")
    finally:
        b.process.send_signal(signal.SIGCONT)
    assert cluster.wait_state("n1", "up", 15), b.log()[-3000:]
    assert wait_for(lambda: _accepted(b, key), 10)
    assert "marked down" in cluster[0].log()


def test_a_node_killed_is_down_within_node_down_after_then_up_after_restart(
        cluster: Cluster) -> None:
    assert cluster.states() == {"n0": "up", "n1": "up"}
    cluster.kill(1)
    killed = time.monotonic()
    assert cluster.wait_state("n1", "down", DOWN_AFTER + 2 + 3), cluster.states()
    assert time.monotonic() - killed < DOWN_AFTER + 2
    assert wait_for(lambda: cluster.leader() == "n0", 5)  # whoever led, the survivor leads
    assert "n1 (" in cluster[0].log() and "marked down" in cluster[0].log()
    cluster.restart(1)
    assert cluster.wait_state("n1", "up", 10)
    key = _key(cluster[1], "after-restart")
    assert wait_for(lambda: _accepted(cluster[0], key), 5)
