"""Shared blobs on a real PostgreSQL (build/blobs.py, build/localize.py): an artifact
stored by one node comes back on a fresh state folder with the same tree and modes;
concurrent first uses fetch once; a fetch killed midway leaves only `.partial` files,
which the next fetch removes; a row tampered with in the database is refused."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from lambdad.build.artifacts import ArtifactStore
from lambdad.build.blobs import BlobStore, publish_artifact
from lambdad.build.localize import Localizer
from lambdad.build.tarrules import TarLimits
from lambdad.errors import BlobRefused
from lambdad.functions import FunctionConfig, FunctionVersion
from tests.support.postgres import Postgres
from tests.unit.test_blobs import make_artifact, tree

GUARD = 60.0  # against a hang, not a speed target


@pytest.fixture
def url(postgres: Postgres) -> Iterator[str]:
    name = postgres.create_database()
    try:
        yield postgres.url(name)
    finally:
        postgres.drop_database(name)


def deployed(root: Path, url: str) -> tuple[FunctionVersion, ArtifactStore]:
    """Node A: an artifact committed for greet v1 and stored as a blob."""
    store = ArtifactStore(root / "a" / "artifacts")
    store.prepare()
    staging = store.begin("greet", 1)
    make_artifact(staging)
    (staging / "runtime-image").unlink()  # commit writes it
    final = store.commit("greet", 1, "sha256:abc")
    sha = publish_artifact(BlobStore(url, "a"), final, root / "a" / "spool")
    version = FunctionVersion(function="greet", number=1, image="", image_id="",
                              config=FunctionConfig(), code_sha256="ab" * 32, code_size=1,
                              created_at=datetime.now(UTC), artifact_sha256=sha)
    return version, store


def node(root: Path, url: str, name: str) -> tuple[Localizer, ArtifactStore, BlobStore]:
    artifacts = ArtifactStore(root / name / "artifacts")
    artifacts.prepare()
    blobs = BlobStore(url, name)
    return Localizer(blobs, artifacts, image_prefix=f"lt-{name}", spool_dir=root / name,
                     tar_limits=TarLimits()), artifacts, blobs


def counting_fetches(blobs: BlobStore) -> list[str]:
    """The blob fetches `blobs` makes from now on (sha256 of each), as a list that grows."""
    calls: list[str] = []
    fetch = blobs.fetch

    def counted(sha: str, target: Path) -> None:
        calls.append(sha)
        fetch(sha, target)

    blobs.fetch = counted  # type: ignore[method-assign]
    return calls


def count_rows(url: str, table: str) -> int:
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        assert row is not None
        return int(row[0])


def test_put_then_get_on_a_fresh_state_folder_gives_the_same_tree(tmp_path: Path,
                                                                  url: str) -> None:
    version, origin = deployed(tmp_path, url)
    localizer, artifacts, _ = node(tmp_path, url, "b")
    local = asyncio.run(asyncio.wait_for(localizer.ensure(version), GUARD))
    assert local.fetch_ms > 0
    fetched = artifacts.find("greet", 1)
    assert fetched is not None
    assert tree(fetched) == tree(origin.path("greet", 1))
    assert ArtifactStore.runtime_image(fetched) == "sha256:abc"
    assert sorted(os.listdir(fetched.parent)) == ["v1"]  # nothing partial left
    # Stored once: the same tree again (a redeploy, a config-only version) adds no row.
    publish_artifact(BlobStore(url, "a"), origin.path("greet", 1), tmp_path / "spool")
    assert count_rows(url, "blobs") == 1


def test_five_concurrent_first_uses_fetch_once(tmp_path: Path, url: str) -> None:
    version, _ = deployed(tmp_path, url)
    localizer, artifacts, blobs = node(tmp_path, url, "b")
    calls = counting_fetches(blobs)

    async def five() -> None:
        results = await asyncio.gather(*(localizer.ensure(version) for _ in range(5)))
        assert all(r.fetch_ms > 0 for r in results)  # each start waited for the fetch
        again = await localizer.ensure(version)  # now local: nothing to fetch
        assert again.fetch_ms == 0

    asyncio.run(asyncio.wait_for(five(), GUARD))
    assert calls == [version.artifact_sha256]
    assert localizer.fetches == 1
    assert artifacts.find("greet", 1) is not None


KILLED_FETCH = """
import sys, time
from pathlib import Path
from lambdad.build.artifacts import ArtifactStore
from lambdad.build.blobs import BlobStore
from lambdad.build.localize import Localizer
from lambdad.build.tarrules import TarLimits
from lambdad.functions import FunctionConfig, FunctionVersion
from datetime import UTC, datetime

url, root, sha = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
blobs = BlobStore(url, "b")
blobs.on_chunk = lambda seq: (print("chunk", seq, flush=True), time.sleep(30))
artifacts = ArtifactStore(root)
version = FunctionVersion(function="greet", number=1, image="", image_id="",
                          config=FunctionConfig(), code_sha256="ab" * 32, code_size=1,
                          created_at=datetime.now(UTC), artifact_sha256=sha)
Localizer(blobs, artifacts, image_prefix="lt-b", spool_dir=root,
          tar_limits=TarLimits()).fetch_artifact(version)
"""


def test_a_fetch_killed_midway_leaves_only_partial_files(tmp_path: Path, url: str) -> None:
    version, origin = deployed(tmp_path, url)
    # Big enough for several chunks: the kill lands after the first.
    (origin.path("greet", 1) / "deps" / "big.bin").write_bytes(os.urandom(3 << 20))
    sha = publish_artifact(BlobStore(url, "a"), origin.path("greet", 1), tmp_path / "spool")
    version = replace(version, artifact_sha256=sha)
    localizer, artifacts, _ = node(tmp_path, url, "b")
    root = artifacts.root
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_FETCH, url, str(root), sha],
        stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # a chunk is on disk, the fetch goes on
        assert line.startswith("chunk 0"), line
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    left = sorted(os.listdir(root / "greet"))
    assert left == ["v1.blob.partial"]
    assert (root / "greet" / "v1.blob.partial").stat().st_size > 0
    assert artifacts.find("greet", 1) is None
    local = asyncio.run(asyncio.wait_for(localizer.ensure(version), GUARD))
    assert local.fetch_ms > 0
    assert sorted(os.listdir(root / "greet")) == ["v1"]
    assert tree(root / "greet" / "v1") == tree(origin.path("greet", 1))


def test_a_blob_tampered_with_in_the_database_is_refused(tmp_path: Path, url: str) -> None:
    import psycopg

    version, _ = deployed(tmp_path, url)
    with psycopg.connect(url) as conn:
        conn.execute("UPDATE blob_chunks SET data = set_byte(data, 700, "
                     "get_byte(data, 700) # 1) WHERE seq = 0")  # one bit flipped
    localizer, artifacts, _ = node(tmp_path, url, "b")
    started = time.monotonic()
    with pytest.raises(BlobRefused, match="sha256"):
        asyncio.run(asyncio.wait_for(localizer.ensure(version), GUARD))
    assert time.monotonic() - started < GUARD
    assert os.listdir(artifacts.root / "greet") == []  # nothing extracted, nothing kept


def test_collect_deletes_only_old_blobs_no_live_version_names(tmp_path: Path,
                                                              url: str) -> None:
    import psycopg

    version, origin = deployed(tmp_path, url)
    (origin.path("greet", 1) / "task" / "other.py").write_text("x = 2\n")
    orphan = publish_artifact(BlobStore(url, "a"), origin.path("greet", 1), tmp_path / "s")
    with psycopg.connect(url) as conn:
        conn.execute("INSERT INTO functions (name, created_at) VALUES ('greet', now())")
        conn.execute("INSERT INTO versions (function, number, image, image_id, config, "
                     "code_sha256, code_size, created_at, artifact_sha256) VALUES "
                     "('greet', 1, '', '', '{}', '', 1, now(), %s)",
                     (version.artifact_sha256,))
    blobs = BlobStore(url, "a")
    assert blobs.collect() == 0  # the orphan is young: maybe a deploy before its row
    with psycopg.connect(url) as conn:
        conn.execute("UPDATE blobs SET created_at = now() - interval '2 hours'")
    assert blobs.collect() == 1
    assert not blobs.has(orphan) and blobs.has(version.artifact_sha256)
    assert count_rows(url, "blob_chunks") == 1
    with psycopg.connect(url) as conn:
        conn.execute("UPDATE versions SET pruned = TRUE")
    assert blobs.collect() == 1
    assert count_rows(url, "blobs") == count_rows(url, "blob_chunks") == 0


def test_a_database_that_cannot_be_reached_is_unavailable_without_the_password(
        tmp_path: Path, postgres: Postgres) -> None:
    from lambdad.errors import Unavailable
    from tests.support.postgres import PASSWORD

    url = postgres.url("no_such_database", password=True)
    with pytest.raises(Unavailable) as refused:
        BlobStore(url, "b").fetch("ab" * 32, tmp_path / "blob")
    assert "is unavailable" in str(refused.value)
    assert PASSWORD not in str(refused.value)
    assert not (tmp_path / "blob").exists()


def test_a_config_only_version_links_its_sources_local_copy(tmp_path: Path, url: str) -> None:
    version, origin = deployed(tmp_path, url)
    localizer, artifacts, blobs = node(tmp_path, url, "b")
    calls = counting_fetches(blobs)
    v2 = replace(version, number=2, source_version=1)
    asyncio.run(asyncio.wait_for(localizer.ensure(version), GUARD))
    asyncio.run(asyncio.wait_for(localizer.ensure(v2), GUARD))
    assert calls == [version.artifact_sha256]  # v1 fetched, v2 linked from it
    v2_path = artifacts.find("greet", 2)
    assert v2_path is not None and tree(v2_path) == tree(origin.path("greet", 1))
