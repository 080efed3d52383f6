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

from tests.support.cluster import Cluster
from tests.support.functions import write_function
from tests.support.postgres import Postgres

pytestmark = pytest.mark.slow

MARKED = ("def handler(event, context):\n"
          "    headers = event.get('headers') or {}\n"
          "    return {'code': %r, 'authorization': headers.get('authorization')}\n")


def test_a_stale_node_never_serves_a_deleted_functions_code(postgres: Postgres,
                                                             tmp_path: Path) -> None:
    nodes = Cluster(postgres, 2)
    try:
        a, b = nodes.start().nodes
        a.deploy(write_function(tmp_path / "old", MARKED % "old", 'name = "twice"\n'))
        first = b.http("twice")
        assert first.status == 200 and first.json()["code"] == "old", first.body
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
