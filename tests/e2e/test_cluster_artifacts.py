"""Cluster mode's shared artifacts (build/blobs.py, build/localize.py), end to end: two
lambdad nodes on one private PostgreSQL and one Docker engine (own state folders, ports
and image prefixes, so "never built here" is real on the shared engine).

Functions are deployed through node A only; node B is started after the deploys (it loads
routing from the database at its start: live propagation is NOTIFY's, another part of
cluster mode) and serves them all the same: a standard-runtime version's artifact is
fetched from the database at its first use (`fetch;dur=` in Server-Timing, the artifact
then in B's state folder), a Dockerfile function is built on B from its stored context
(the image carries B's daemon label), and a config-only version reuses its base's blob.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cluster import Cluster, dockerfile_function
from tests.support.daemon import Lambdad
from tests.support.metrics import total
from tests.support.postgres import Postgres

pytestmark = pytest.mark.slow

HANDLER = "def handler(event, context):\n    return {'served': 'docker-fn'}\n"


@contextlib.contextmanager
def two_nodes(postgres: Postgres) -> Iterator[tuple[Lambdad, Lambdad, str]]:
    """Nodes A and B (not started) on one fresh database, and the database's name."""
    nodes = Cluster(postgres, 2)  # (with the cluster key and names cluster mode needs)
    try:
        yield nodes[0], nodes[1], nodes.db
    finally:
        nodes.close()


def fetch_ms(server_timing: str) -> float | None:
    found = re.search(r"fetch;dur=([0-9.]+)", server_timing)
    return float(found.group(1)) if found else None


def test_a_node_serves_versions_deployed_through_another(postgres: Postgres,
                                                         tmp_path: Path) -> None:
    with two_nodes(postgres) as (a, b, db):
        a.start()
        a.deploy("greet", "--name", "greet")
        a.deploy(dockerfile_function(tmp_path / "dock", "dock", HANDLER))
        # A stored one artifact blob and one context blob, named by the version rows.
        assert postgres.psql(db, "SELECT string_agg(kind, ',' ORDER BY kind) FROM blobs") \
            == "artifact,context"
        assert postgres.psql(db, "SELECT count(*) FROM versions WHERE artifact_sha256 IN "
                                 "(SELECT sha256 FROM blobs)") == "1"
        assert postgres.psql(db, "SELECT count(*) FROM versions WHERE context_sha256 IN "
                                 "(SELECT sha256 FROM blobs)") == "1"
        # A itself runs what it built: no fetch on its first call.
        first_on_a = a.http("greet", "/?name=a")
        assert first_on_a.status == 200
        assert fetch_ms(first_on_a.headers["server-timing"]) is None

        b.start()
        assert not (b.state_dir / "artifacts" / "greet").exists()
        served = b.http("greet", "/?name=b")
        assert served.status == 200, served.body
        assert served.json() == {"message": "Hello, b!"}
        assert served.headers["lambda-cold-start"] in ("cell", "container")
        assert fetch_ms(served.headers["server-timing"]) is not None, served.headers
        assert (b.state_dir / "artifacts" / "greet" / "v1" / "task" / "handler.py").is_file()
        assert [p.name for p in (b.state_dir / "artifacts" / "greet").iterdir()] == ["v1"]
        assert total(b, "lambdad_artifact_fetch_seconds_count", kind="artifact") == 1
        warm = b.http("greet", "/?name=again")
        assert warm.status == 200 and fetch_ms(warm.headers["server-timing"]) is None

        # The Dockerfile function: built on B at first use, under B's own tag and label.
        assert b.images("dock") == []
        docked = b.http("dock", "/")
        assert docked.status == 200, docked.body
        assert docked.json() == {"served": "docker-fn"}
        assert fetch_ms(docked.headers["server-timing"]) is not None
        (image,) = b.images("dock")
        assert image.labels["lambda.daemon"] == b.daemon_id
        assert f"{b.image_prefix}/dock:v1" in image.tags
        (container,) = b.containers("dock")
        assert container.image.id == image.id
        assert total(b, "lambdad_artifact_fetch_seconds_count", kind="image") == 1

        # A config-only version through A shares its base's blob: no second blob row.
        configured = a.cli("config", "greet", "--timeout", "20")
        assert configured.code == 0, configured.stderr
        assert postgres.psql(db, "SELECT count(*) FROM blobs") == "2"
        assert postgres.psql(db, "SELECT count(DISTINCT artifact_sha256) FROM versions "
                                 "WHERE function = 'greet'") == "1"
        b.stop()
        b.start()  # loads v2 from the database; its own tag of dock is kept
        assert len(b.images("dock")) == 1
        served = b.http("greet", "/?name=v2")
        assert served.status == 200 and served.headers["lambda-version"] == "2"
        assert fetch_ms(served.headers["server-timing"]) is not None
        docked = b.http("dock", "/")
        assert docked.status == 200
        assert fetch_ms(docked.headers.get("server-timing", "")) is None  # built already


def test_on_sqlite_a_deploy_stores_no_blob(tmp_path: Path) -> None:
    """The embedded default is unchanged: one node has nothing to share."""
    daemon = Lambdad()
    try:
        daemon.start()
        daemon.deploy("greet", "--name", "greet")
        served = daemon.http("greet", "/?name=x")
        assert served.status == 200 and fetch_ms(served.headers["server-timing"]) is None
        with sqlite3.connect(daemon.state_dir / "lambda.db") as db:
            assert db.execute("SELECT count(*) FROM blobs").fetchone() == (0,)
            assert db.execute("SELECT count(*) FROM blob_chunks").fetchone() == (0,)
            assert db.execute("SELECT artifact_sha256, context_sha256 FROM versions"
                              ).fetchall() == [("", "")]
    finally:
        daemon.close()
