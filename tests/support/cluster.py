"""Several real lambdad nodes on one private PostgreSQL (tests/support/postgres.py).

Each node is a `Lambdad` with its own ports, state folder and image prefix (so on the
one Docker engine "never built here" is real), started with `--database` on one fresh
database, its own `--node-name`, a short `--node-down-after` and the cluster key.
`kill(i)` is kill -9; `restart(i)` starts it again on the same state folder and ports
(same daemon id). `close()` removes each node's containers and images, then the
database."""

from __future__ import annotations

import contextlib
import http.client
import json
import secrets
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.daemon import Lambdad, wait_for
from tests.support.postgres import Postgres


class Cluster:
    def __init__(self, postgres: Postgres, n: int = 2, *, down_after: float = 3,
                 extra_args: list[str] | None = None,
                 env: dict[int, dict[str, str]] | None = None) -> None:
        self.postgres = postgres
        self.db = postgres.create_database()
        self.url = postgres.url(self.db)
        self.down_after = down_after
        self.folder = Path(tempfile.mkdtemp(prefix="lt-cluster-", dir="/tmp"))
        self.key_file = self.folder / "cluster-key"
        self.key_file.write_text(secrets.token_urlsafe(32) + "\n")
        self.key_file.chmod(0o600)  # as docs/cluster.md says (lambdad warns otherwise)
        self.nodes: list[Lambdad] = []
        for i in range(n):
            node = Lambdad()
            node.extra_args = [
                "--database", self.url, "--node-name", f"n{i}",
                "--node-down-after", str(down_after), "--cluster-key-file", str(self.key_file),
                "--advertise-address", f"127.0.0.1:{node.grpc_port}",
                *(extra_args or [])]
            node.start_env = dict((env or {}).get(i, {}))
            self.nodes.append(node)

    def __getitem__(self, i: int) -> Lambdad:
        return self.nodes[i]

    def start(self) -> Cluster:
        try:
            for node in self.nodes:
                node.start()
        except BaseException:
            self.close()
            raise
        return self

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def kill(self, i: int) -> None:
        """kill -9: no clean stop, its connections and containers left as they are."""
        node = self.nodes[i]
        assert node.process is not None
        node.process.send_signal(signal.SIGKILL)
        node.process.wait(timeout=30)

    def restart(self, i: int) -> None:
        self.nodes[i].start()

    def sql(self, query: str) -> str:
        return self.postgres.psql(self.db, query)

    def states(self) -> dict[str, str]:
        """Node name -> state, as the nodes table has them."""
        rows = self.sql("SELECT name || '=' || state FROM nodes ORDER BY name")
        return dict(line.split("=", 1) for line in rows.splitlines() if line)

    def leader(self) -> str | None:
        """The name of the node holding the leader lock, by its session's backend."""
        found = self.sql(
            "SELECT split_part(a.application_name, ':', 2) FROM pg_locks l "
            "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' "
            "AND l.classid = 1279348034 AND l.objid = 2 AND l.granted")
        if not found:
            return None
        return self.sql(f"SELECT name FROM nodes WHERE id = '{found}'") or None

    def kill_session(self, i: int) -> int:
        """Terminates node i's listen and session backends (a lost connection)."""
        node_id = self.nodes[i].daemon_id
        return int(self.sql(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            f"WHERE application_name IN ('lambdad:{node_id}:listen', "
            f"'lambdad:{node_id}:session')") or 0)

    def wait_state(self, name: str, state: str, timeout: float) -> bool:
        return wait_for(lambda: self.states().get(name) == state, timeout)

    def close(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.close()
        with contextlib.suppress(Exception):
            self.postgres.drop_database(self.db)
        shutil.rmtree(self.folder, ignore_errors=True)


def within(predicate: Callable[[], object], seconds: float) -> float | None:
    """Seconds until `predicate()` held, polled from now; None if not within `seconds`
    (for "live on every node within 1 s")."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if predicate():
            return time.monotonic() - start
        time.sleep(0.02)
    return None


def tagged(folder: Path, name: str, tag: str) -> Path:
    """A function NAME in `folder` answering {"tag": TAG}: which version serves."""
    folder.mkdir(exist_ok=True)
    (folder / "handler.py").write_text(
        f"def handler(event, context):\n    return {{'tag': '{tag}'}}\n")
    (folder / "lambda.toml").write_text(f'name = "{name}"\n')
    return folder


# A function for the queue's tests across nodes: each delivery takes 20 ms.
SLEEPY_HANDLER = (
    "import time\n\n"
    "def handler(event, context):\n"
    "    time.sleep(0.02)\n"
    "    return {'n': event.get('n')}\n"
)


def event_function(folder: Path, name: str, manifest: str) -> Path:
    """A folder with SLEEPY_HANDLER and a lambda.toml: `name`, then `manifest`."""
    folder.mkdir()
    (folder / "handler.py").write_text(SLEEPY_HANDLER)
    (folder / "lambda.toml").write_text(f'name = "{name}"\n{manifest}')
    return folder


def post_event(port: int, function: str, n: int, timeout: float = 10) -> tuple[int, bytes]:
    """One event {"n": n} through the gateway at `port`: (status, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/", body=json.dumps({"n": n}),
                     headers={"Host": f"{function}.localhost",
                              "Lambda-Invocation-Type": "Event"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def dockerfile_function(folder: Path, name: str, handler_source: str) -> Path:
    """A Dockerfile function (one instance across the cluster) serving `handler_source`."""
    folder.mkdir(parents=True)
    (folder / "handler.py").write_text(handler_source)
    (folder / "Dockerfile").write_text(
        "FROM lambda-runtime/python:3.11\nCOPY handler.py /var/task/handler.py\n")
    (folder / "lambda.toml").write_text(
        f'name = "{name}"\nruntime = "docker"\nhandler = "handler.handler"\n'
        "[scaling]\nmax_instances = 1\n")
    return folder


def start_lines(node: Lambdad, function: str) -> list[dict[str, Any]]:
    """The runtime's START frames (one per delivery) in the node's log files of
    `function`, as entries (request_id, instance, ...)."""
    found: list[dict[str, Any]] = []
    for path in (node.state_dir / "logs" / function).glob("*.jsonl"):
        for line in path.read_text().splitlines():
            entry: dict[str, Any] = json.loads(line)
            if entry["stream"] == "runtime" and entry["message"].startswith("START RequestId:"):
                found.append(entry)
    return found
