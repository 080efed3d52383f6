"""A network partition, for real: node C runs in a network namespace of its own, joined to
the host by a veth pair, and reaches PostgreSQL over TCP on the host side's address (the
only non-loopback addresses a test may use are those namespaces'). Taking the link down
cuts C off without closing anything: its peers mark it down, its leftover connections
are terminated (so it leads nothing), and C itself stops leading within
node_down_after/2. Link up: C finds out and is up again, with a change made meanwhile,
and the instance it ran is stopped: its lease went with the mark-down, and A took it.

A private PostgreSQL here, listening on the veth address besides its Unix socket."""

from __future__ import annotations

import contextlib
import random
import secrets
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import Lambdad, wait_for
from tests.support.postgres import Postgres

pytestmark = pytest.mark.slow

DOWN_AFTER = 3


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True,
                          timeout=30)


@contextlib.contextmanager
def namespace() -> Iterator[tuple[str, str, str, str]]:
    """(namespace, host-side link, host address, namespace address); removed after."""
    used = ip("-o", "addr").stdout
    k = next(k for k in random.sample(range(1, 250), 249) if f"10.219.{k}." not in used)
    tag = secrets.token_hex(3)
    ns, host_link, ns_link = f"ns-lt-{tag}", f"lth{tag}", f"ltn{tag}"
    host_addr, ns_addr = f"10.219.{k}.1", f"10.219.{k}.2"
    try:
        ip("netns", "add", ns)
        ip("link", "add", host_link, "type", "veth", "peer", "name", ns_link)
        ip("link", "set", ns_link, "netns", ns)
        ip("addr", "add", f"{host_addr}/30", "dev", host_link)
        ip("link", "set", host_link, "up")
        for command in (["addr", "add", f"{ns_addr}/30", "dev", ns_link],
                        ["link", "set", ns_link, "up"], ["link", "set", "lo", "up"]):
            ip("netns", "exec", ns, "ip", *command)
        yield ns, host_link, host_addr, ns_addr
    finally:
        ip("link", "del", host_link, check=False)
        ip("netns", "del", ns, check=False)


class TcpPostgres(Postgres):
    """The test server, also on `address` (TCP) for the namespace's /30."""

    def __init__(self, address: str) -> None:
        super().__init__()
        self.address = address

    def _ctl_start(self) -> None:
        hba = self.data / "pg_hba.conf"
        net = self.address.rsplit(".", 1)[0] + ".0/30"
        if net not in hba.read_text():
            with hba.open("a") as f:
                f.write(f"host all lambda {net} trust\n")
        options = (f"-c listen_addresses='{self.address}' "
                   f"-c unix_socket_directories='{self.socket_dir}' -c fsync=off "
                   "-c max_connections=100")
        result = self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l",
                           str(self.log), "-w", "-t", "30", "-o", options, "start", check=False)
        if result.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {result.stderr}\n{self.server_log()}")


def node(url: str, name: str, key_file: Path, prefix: list[str] | None = None) -> Lambdad:
    daemon = Lambdad(extra_args=[
        "--database", url, "--node-name", name, "--node-down-after", str(DOWN_AFTER),
        "--cluster-key-file", str(key_file)])
    daemon.extra_args += ["--advertise-address", f"127.0.0.1:{daemon.grpc_port}"]
    daemon.command_prefix = prefix or []
    return daemon


def test_a_partitioned_node_is_marked_down_leads_nothing_and_rejoins() -> None:
    with namespace() as (ns, host_link, host_addr, ns_addr), \
            tempfile.TemporaryDirectory(prefix="lt-part-") as folder:
        server = TcpPostgres(host_addr)
        nodes: list[Lambdad] = []
        try:
            server.start()
            db = server.create_database()
            key_file = Path(folder) / "cluster-key"
            key_file.write_text(secrets.token_urlsafe(32))
            a = node(server.url(db), "a", key_file)
            c = node(f"postgresql://lambda@{host_addr}/{db}", "c", key_file,
                     ["ip", "netns", "exec", ns])
            # C's control API on its namespace address, so the test can call it over TCP
            c.extra_args += ["--grpc-listen", f"{ns_addr}:{c.grpc_port}",
                             "--advertise-address", f"{ns_addr}:{c.grpc_port}"]
            nodes += [c, a]
            c.start()  # first: it leads
            a.start()

            def states() -> dict[str, str]:
                rows = server.psql(db, "SELECT name || '=' || state FROM nodes")
                return dict(r.split("=") for r in rows.splitlines())

            def leader() -> str:
                return server.psql(
                    db, "SELECT n.name FROM pg_locks l JOIN pg_stat_activity s ON s.pid = "
                        "l.pid JOIN nodes n ON s.application_name LIKE 'lambdad:' || n.id "
                        "|| ':%' WHERE l.locktype = 'advisory' AND l.classid = 1279348034 "
                        "AND l.objid = 2 AND l.granted")

            assert wait_for(lambda: states() == {"a": "up", "c": "up"}, 10), states()
            assert wait_for(lambda: leader() == "c", 10), leader()
            assert server.psql(db, "SELECT count(*) FROM pg_stat_activity WHERE client_addr "
                                   "IS NOT NULL") != "0"  # C really is on TCP
            # C runs the one instance max_instances allows (its deploy's, with the lease).
            code = Path(folder) / "solo"
            code.mkdir()
            (code / "handler.py").write_text("def handler(event, context):\n    return 1\n")
            (code / "lambda.toml").write_text('name = "solo"\n[scaling]\nmax_instances = 1\n')
            assert c.deploy(code).code == 0

            def running(daemon: Lambdad) -> int:
                return sum(1 for x in daemon.containers("solo") if x.status == "running")

            def leases() -> str:
                return server.psql(db, "SELECT coalesce(string_agg(n.name, ' '), '') FROM "
                                       "instance_leases l JOIN nodes n ON n.id = l.node "
                                       "WHERE l.function = 'solo'")

            assert wait_for(lambda: running(c) == 1 and leases() == "c", 30), leases()

            ip("link", "set", host_link, "down")  # the partition: nothing is closed
            assert wait_for(lambda: states().get("c") == "down", DOWN_AFTER + 6), states()
            assert wait_for(lambda: leader() == "a", 5), leader()
            assert wait_for(lambda: "no answer to a heartbeat" in c.log()
                            and "is no longer the leader" in c.log(), 10), c.log()[-2000:]
            # Its lease went with the mark-down: A takes it for an instance of its own.
            assert wait_for(lambda: leases() == "", 5), leases()
            assert a.cli("invoke", "solo").code == 0
            assert leases() == "a" and running(a) == 1
            made = a.cli("keys", "create", "--name", "during-partition", "--role", "invoker")
            assert made.code == 0, made.stderr
            secret = made.stdout.strip()

            ip("link", "set", host_link, "up")
            assert wait_for(lambda: states().get("c") == "up", 30), c.log()[-3000:]
            assert leader() == "a"  # C does not take it back
            # On rejoin C finds the function's one lease taken: its instance stops, and
            # max_instances holds across the cluster again.
            assert wait_for(lambda: running(c) == 0, 30), c.log()[-3000:]
            assert leases() == "a" and running(a) == 1
            assert "stopped on rejoin" in c.log()
            # the key made while C was cut off works on C: its reload after the reconnect
            env = c.env(LAMBDA_HOST=f"{ns_addr}:{c.grpc_port}", LAMBDA_API_KEY=secret)
            assert wait_for(lambda: c.cli("list", env=env).code == 0, 15), c.log()[-2000:]
        finally:
            for daemon in nodes:
                daemon.close()
            server.stop()
