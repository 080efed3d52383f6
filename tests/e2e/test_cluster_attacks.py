"""Attacks on cluster mode (issue 18), against real nodes on one private PostgreSQL.

- A node that was down while a function was deleted and deployed again under the same
  name (its versions restart at 1) must not serve its stale copy of the deleted code:
  a local artifact counts only while it is the blob the version row names.
- The cluster key (the nodes' shared secret for Logs fan-out) is not an API key: it
  opens no `auth = "key"` function on the gateway (docs/cluster.md: it "invokes
  nowhere"), and it is still kept from the functions' headers.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cluster import Cluster, dockerfile_function
from tests.support.daemon import Lambdad, wait_for
from tests.support.functions import write_function
from tests.support.postgres import Postgres

pytestmark = pytest.mark.slow

MARKED = ("def handler(event, context):\n"
          "    headers = event.get('headers') or {}\n"
          "    return {'code': %r, 'authorization': headers.get('authorization')}\n")


def code_on(node: Lambdad, name: str) -> str:
    """What `name` answers through `node`, once the node knows it (a deploy through
    another node is announced: live within a second, not at once)."""
    assert wait_for(lambda: node.http(name).status == 200, 30), node.log()[-2000:]
    return str(node.http(name).json()["code"])


def test_a_stale_node_never_serves_a_deleted_functions_code(postgres: Postgres,
                                                             tmp_path: Path) -> None:
    nodes = Cluster(postgres, 2)
    try:
        a, b = nodes.start().nodes
        a.deploy(write_function(tmp_path / "old", MARKED % "old", 'name = "twice"\n'))
        assert code_on(b, "twice") == "old"
        nodes.kill(1)  # B misses the delete and the new deploy
        assert a.cli("delete", "twice", "--yes").code == 0
        a.deploy(write_function(tmp_path / "new", MARKED % "new", 'name = "twice"\n'))
        assert a.http("twice").json()["code"] == "new"
        nodes.restart(1)
        served = b.http("twice")
        assert served.status == 200, served.body
        assert served.headers["lambda-version"] == "1"
        assert served.json()["code"] == "new", "node B ran the deleted function's code"
    finally:
        nodes.close()


def test_the_cluster_key_opens_no_private_function(postgres: Postgres,
                                                    tmp_path: Path) -> None:
    nodes = Cluster(postgres, 1)
    try:
        (a,) = nodes.start().nodes
        cluster_key = nodes.key_file.read_text().strip()
        a.deploy(write_function(tmp_path / "priv", MARKED % "priv",
                                'name = "priv"\nauth = "key"\n'))
        a.deploy(write_function(tmp_path / "pub", MARKED % "pub", 'name = "pub"\n'))
        refused = a.http("priv", headers={"Authorization": f"Bearer {cluster_key}"})
        assert refused.status == 401, (refused.status, refused.body)
        # Kept from a public function all the same: a function never sees the key.
        seen = a.http("pub", headers={"Authorization": f"Bearer {cluster_key}"})
        assert seen.status == 200 and seen.json()["authorization"] is None, seen.body
    finally:
        nodes.close()


def test_forged_announcements_crash_no_listener(postgres: Postgres, tmp_path: Path) -> None:
    """Anyone who can write to the database can NOTIFY (trusted, but a bad payload must
    not end a node's LISTEN loop, which would cost it its session and its leadership)."""
    nodes = Cluster(postgres, 2)
    try:
        a, b = nodes.start().nodes
        payloads = [
            "not json", "[" * 3900 + "]" * 3900, '{"o": 1}', "x" * 7990,
            '{"o":"x","k":"fn","n":"../../etc"}', '{"o":"x","k":"fn","n":"\\ud800"}',
            '{"o":"x","k":"slots","n":"\\ud800\\u0000' + "a" * 200 + '"}',
            '{"o":"x","k":"node","n":""}', '{"o":"x","k":"cancel","n":"zz"}',
            '{"o":"x","k":"keys","n":"","extra":1}', '{"o":"x","k":"nope","n":""}',
        ]
        for channel in ("lambda_changes", "lambda_queue"):
            for payload in payloads:
                quoted = payload.replace("'", "''")
                nodes.sql(f"SELECT pg_notify('{channel}', '{quoted}')")
        b.deploy(write_function(tmp_path / "after", MARKED % "after", 'name = "after"\n'))
        assert code_on(a, "after") == "after"  # A still listens: B's deploy is live on it
        assert a.process is not None and a.process.poll() is None
        log = a.log()
        assert "session failed" not in log and "session lost" not in log, log[-2000:]
        assert "ignored a malformed change announcement" in log
    finally:
        nodes.close()


def test_a_stale_node_never_serves_a_deleted_dockerfile_functions_image(
        postgres: Postgres, tmp_path: Path) -> None:
    """As above for a Dockerfile function: B built its own `PREFIX/dock:v1` from the
    stored context of the deleted v1; that image (and its container) is not the new v1."""
    nodes = Cluster(postgres, 2)
    try:
        a, b = nodes.start().nodes
        a.deploy(dockerfile_function(tmp_path / "old", "dock", MARKED % "old"))
        assert code_on(b, "dock") == "old"
        nodes.kill(1)
        assert a.cli("delete", "dock", "--yes").code == 0
        a.deploy(dockerfile_function(tmp_path / "new", "dock", MARKED % "new"))
        assert a.http("dock").json()["code"] == "new"
        nodes.restart(1)
        served = b.http("dock")
        assert served.status == 200, served.body
        assert served.json()["code"] == "new", "node B ran the deleted function's image"
    finally:
        nodes.close()


def test_a_stalled_node_drops_its_warm_instances_of_a_deleted_function(
        postgres: Postgres, tmp_path: Path) -> None:
    """B stalls (SIGSTOP) with a warm instance of fn v1, is marked down (its connections
    ended, so the announcements are lost), fn is deleted and deployed again (back at v1)
    through A; B resumes and reloads: from then on its warm deleted v1 never answers.
    (Until its reload B serves what it had in memory, as it does while the database is
    away: docs/cluster.md.)"""
    import signal

    nodes = Cluster(postgres, 2)
    try:
        a, b = nodes.start().nodes
        a.deploy(write_function(tmp_path / "old", MARKED % "old", 'name = "again"\n'))
        assert code_on(b, "again") == "old"
        assert b.process is not None
        b.process.send_signal(signal.SIGSTOP)
        try:
            assert nodes.wait_state("n1", "down", 30)
            assert a.cli("delete", "again", "--yes").code == 0
            a.deploy(write_function(tmp_path / "new", MARKED % "new", 'name = "again"\n'))
        finally:
            b.process.send_signal(signal.SIGCONT)
        assert nodes.wait_state("n1", "up", 30)
        assert wait_for(lambda: b.log().count("version=1 is live (changed on another node)") > 1,
                        30)
        codes = [b.http("again").json()["code"] for _ in range(20)]
        assert set(codes) == {"new"}, codes
    finally:
        nodes.close()


SAYER = ("def handler(event, context):\n"
         "    print('said ' + event['say'], flush=True)\n"
         "    return {'said': event['say']}\n")


def test_a_hung_peer_does_not_hang_logs_through_another_node(postgres: Postgres,
                                                              tmp_path: Path) -> None:
    """B stalls (SIGSTOP: its TCP port still accepts, nothing answers) but stays `up` in
    the nodes table (a long node_down_after): `logs` through A still answers with A's
    lines (B left out after its timeout), and `logs -f` through A shows A's new lines."""
    import json
    import signal
    import subprocess
    import sys
    import threading
    import time

    from tests.support.daemon import ROOT

    nodes = Cluster(postgres, 2, down_after=60)
    try:
        a, b = nodes.start().nodes
        a.deploy(write_function(tmp_path / "sayer", SAYER, 'name = "sayer"\n'))
        assert a.cli("invoke", "sayer", "--data", '{"say": "on-a"}').code == 0
        assert wait_for(lambda: b.cli("invoke", "sayer", "--data", '{"say": "on-b"}').code
                        == 0, 60)
        assert b.process is not None
        b.process.send_signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            result = a.cli("-o", "json", "logs", "sayer", timeout=60)
            took = time.monotonic() - started
            assert result.code == 0, result.stderr
            messages = [json.loads(line)["message"] for line in result.stdout.splitlines()
                        if line.strip()]
            assert "said on-a" in messages, messages
            assert took < 30, took  # a bound against hanging, not a speed target
            follow = subprocess.Popen(
                [sys.executable, "-m", "lambdactl", "-o", "json", "logs", "sayer", "-f"],
                env=a.env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True)
            seen: list[str] = []

            def read() -> None:
                assert follow.stdout is not None
                for line in follow.stdout:
                    if line.strip():
                        seen.append(json.loads(line)["message"])

            threading.Thread(target=read, daemon=True).start()
            try:
                assert wait_for(lambda: "said on-a" in seen, 30), seen
                assert a.cli("invoke", "sayer", "--data", '{"say": "later-a"}').code == 0
                assert wait_for(lambda: "said later-a" in seen, 30), (seen, a.log()[-2000:])
            finally:
                follow.kill()
                follow.wait()
        finally:
            b.process.send_signal(signal.SIGCONT)
    finally:
        nodes.close()


SLOW = ("import socket, time\n"
        "def handler(event, context):\n"
        "    time.sleep(event.get('sleep', 0))\n"
        "    return {'host': socket.gethostname()}\n")


def test_a_stalled_nodes_late_end_of_an_attempt_is_refused(postgres: Postgres,
                                                           tmp_path: Path) -> None:
    """B claims an event and stalls (SIGSTOP) mid-attempt; B is marked down, the attempt
    is queued again and A delivers it. B resumes, its instance answers: B's late end of
    the old attempt must not overwrite A's (fencing by owner and attempt)."""
    import json
    import signal

    nodes = Cluster(postgres, 2)
    try:
        a, b = nodes.start().nodes
        a.deploy(write_function(tmp_path / "slow", SLOW, 'name = "slow"\ntimeout = 30\n'))
        assert wait_for(lambda: b.http("slow").status == 200, 30)
        accepted = b.http("slow", method="POST", body=b'{"sleep": 6}',
                          headers={"Lambda-Invocation-Type": "Event"})
        assert accepted.status == 202, accepted.body
        assert wait_for(lambda: nodes.sql(
            "SELECT owner_node FROM invocations WHERE function = 'slow' AND status = "
            "'running'") == b.daemon_id, 15), nodes.sql("SELECT * FROM invocations")
        assert b.process is not None
        b.process.send_signal(signal.SIGSTOP)
        try:
            assert nodes.wait_state("n1", "down", 30)
            assert wait_for(lambda: nodes.sql(
                "SELECT status FROM invocations WHERE function = 'slow'") == "succeeded",
                60), nodes.sql("SELECT status, attempts, last_error FROM invocations")
            delivered = nodes.sql("SELECT attempts || ' ' || convert_from(result, 'UTF8') "
                                  "FROM invocations WHERE function = 'slow'")
        finally:
            b.process.send_signal(signal.SIGCONT)
        assert nodes.wait_state("n1", "up", 30)
        # B's instance finished its sleep long ago: once B runs again it has its answer,
        # and its end of that attempt is refused (it is no longer B's).
        assert wait_for(lambda: "not recorded: no longer this node's" in b.log(), 30), \
            b.log()[-2500:]
        after = nodes.sql("SELECT attempts || ' ' || convert_from(result, 'UTF8') "
                          "FROM invocations WHERE function = 'slow'")
        assert after == delivered, (delivered, after, b.log()[-2500:])
        attempts, result = after.split(" ", 1)
        assert int(attempts) == 2 and json.loads(result)["host"], after
    finally:
        nodes.close()


def test_the_database_password_shows_nowhere(postgres: Postgres, tmp_path: Path) -> None:
    """Two nodes on a URL with a real password (scram-sha-256), given as LAMBDAD_DATABASE
    as docs/cluster.md advises: through a deploy, a fetch on the other node, a fanned-out
    `logs`, `nodes`, `stats`, /metrics, and the database going away and coming back, the
    password is in no log line, CLI output, metric or process command line."""
    from tests.support.metrics import scrape
    from tests.support.postgres import PASSWORD

    nodes = Cluster(postgres, 2)
    url = postgres.url(nodes.db, password=True)
    for node in nodes.nodes:
        at = node.extra_args.index("--database")
        del node.extra_args[at:at + 2]
        node.start_env["LAMBDAD_DATABASE"] = url
    try:
        a, b = nodes.start().nodes
        outputs: list[str] = []
        a.deploy(write_function(tmp_path / "sayer", SAYER, 'name = "sayer"\n'))
        assert wait_for(lambda: b.cli("invoke", "sayer", "--data", '{"say": "b"}').code
                        == 0, 60)
        for node in (a, b):
            for args in (("logs", "sayer"), ("nodes",), ("-o", "json", "nodes"),
                         ("stats",), ("version",)):
                result = node.cli(*args)
                outputs += [result.stdout, result.stderr]
            outputs.append(scrape(node))
            assert node.process is not None
            outputs.append(Path(f"/proc/{node.process.pid}/cmdline").read_text())
        postgres.halt()
        try:
            down = a.cli("invocations", "sayer")
            assert down.code != 0
            assert "unavailable" in down.stderr and "***" in down.stderr, down.stderr
            outputs += [down.stdout, down.stderr]
            refused = b.cli("deploy", str(tmp_path / "sayer"))
            outputs += [refused.stdout, refused.stderr]
            outputs.append(b.http("sayer", method="POST", body=b'{"say": "x"}',
                                  headers={"Lambda-Invocation-Type": "Event"}).body.decode())
        finally:
            postgres.resume()
        assert wait_for(lambda: a.cli("invocations", "sayer").code == 0, 60)
        assert wait_for(lambda: "is back" in b.log(), 60)
        outputs += [a.log(), b.log()]
        leaked = [text[max(0, text.find(PASSWORD) - 200):text.find(PASSWORD) + 50]
                  for text in outputs if PASSWORD in text]
        assert not leaked, leaked
    finally:
        nodes.close()


# Node 1's wall clock an hour ahead, as a host whose clock was set wrong: every
# time.time() in that daemon (its front door, its worker) reads it.
AHEAD = ("import time\n"
         "_real = time.time\n"
         "time.time = lambda: _real() + 3600\n")


def test_an_event_accepted_by_a_node_an_hour_ahead_is_delivered_when_it_dies(
        postgres: Postgres, tmp_path: Path) -> None:
    """Node 1's clock runs an hour ahead. It accepts two events of a function with one
    instance: it delivers the first (slow), the second waits in the queue. Node 1 is
    killed: node 0 delivers both within a minute, not after the hour (the queue's times
    are the database's clock, not the node's that stored them)."""
    skew = tmp_path / "skew"
    skew.mkdir()
    (skew / "sitecustomize.py").write_text(AHEAD)
    nodes = Cluster(postgres, 2, env={1: {"PYTHONPATH": str(skew)}})
    try:
        a, b = nodes.start().nodes
        a.deploy(write_function(tmp_path / "slow", SLOW, 'name = "slow"\ntimeout = 30\n'
                                "[scaling]\nmax_instances = 1\n"))
        assert wait_for(lambda: b.http("slow").status == 200, 30)  # its instance: on B
        for sleep in (6, 0):
            accepted = b.http("slow", method="POST", body=b'{"sleep": %d}' % sleep,
                              headers={"Lambda-Invocation-Type": "Event"})
            assert accepted.status == 202, accepted.body
        assert wait_for(lambda: nodes.sql(
            "SELECT string_agg(status || ':' || coalesce(owner_node, '-'), ',' ORDER BY "
            "created_at) FROM invocations WHERE function = 'slow'")
            == f"running:{b.daemon_id},queued:-", 15), nodes.sql(
            "SELECT status, owner_node FROM invocations")
        nodes.kill(1)
        assert nodes.wait_state("n1", "down", 30)
        assert wait_for(lambda: nodes.sql(
            "SELECT string_agg(status, ',') FROM invocations WHERE function = 'slow'")
            == "succeeded,succeeded", 60), nodes.sql(
            "SELECT status, attempts, next_attempt_at - extract(epoch FROM now()), "
            "last_error FROM invocations")
    finally:
        nodes.close()
