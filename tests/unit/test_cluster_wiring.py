"""Cluster mode's start-up rules and wiring: a postgresql database needs a readable
cluster key and an address other nodes can dial; SQLite runs no cluster part at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from lambdad.cluster.leadership import LocalLeadership
from lambdad.cluster.wiring import build_cluster, check_cluster
from lambdad.config import Config
from lambdad.config.resolve import resolve
from lambdad.host import StartupError

PG = "postgresql://lambda@db.example/lambda"


def config(*argv: str) -> Config:
    resolved, _ = resolve(["--config", "none", "--state-dir", "/tmp/x", *argv], {},
                          lambda path: None)
    return resolved.config


async def nothing() -> None:
    pass


def key_file(tmp_path: Path, text: str = "k" * 32) -> str:
    path = tmp_path / "cluster-key"
    path.write_text(text + "\n")
    return str(path)


def test_sqlite_needs_nothing_and_runs_no_cluster_part() -> None:
    plain = config()
    assert check_cluster(plain) is None
    cluster = build_cluster(plain, "id", handlers={}, reload=nothing)
    assert cluster.membership is None and cluster.applier is None
    assert cluster.before_functions == [] and cluster.after_functions == []
    assert isinstance(cluster.leadership, LocalLeadership) and cluster.leadership.leader


def test_postgresql_needs_a_cluster_key() -> None:
    with pytest.raises(StartupError, match="cluster_key_file"):
        check_cluster(config("--database", PG))


@pytest.mark.parametrize("text", ["short", "has a blank in the middle of it here"])
def test_a_weak_or_malformed_cluster_key_is_refused(tmp_path: Path, text: str) -> None:
    with pytest.raises(StartupError, match="at least 16"):
        check_cluster(config("--database", PG, "--cluster-key-file", key_file(tmp_path, text)))


def test_an_unreadable_cluster_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StartupError, match="cannot read"):
        check_cluster(config("--database", PG, "--cluster-key-file", str(tmp_path / "no")))


@pytest.mark.parametrize("listen", ["none", "0.0.0.0:50051", "[::]:50051"])
def test_an_address_others_cannot_dial_needs_advertise_address(tmp_path: Path,
                                                               listen: str) -> None:
    args = ("--database", PG, "--cluster-key-file", key_file(tmp_path), "--grpc-listen", listen)
    with pytest.raises(StartupError, match="advertise_address"):
        check_cluster(config(*args))
    assert check_cluster(config(*args, "--advertise-address", "10.0.0.5:50051")) == "k" * 32


def test_postgresql_builds_membership_before_and_the_applier_after_functions(
        tmp_path: Path) -> None:
    cfg = config("--database", PG, "--cluster-key-file", key_file(tmp_path),
                 "--node-name", "n1", "--node-down-after", "5")
    cluster = build_cluster(cfg, "abc", handlers={}, reload=nothing)
    assert cluster.membership is not None
    assert cluster.before_functions == [cluster.membership]
    assert [c.name for c in cluster.after_functions] == ["cluster changes"]
    assert cluster.membership.node.name == "n1"
    assert cluster.membership.node.grpc_address == "127.0.0.1:50051"
    assert cluster.membership.interval == 1.0
    assert not cluster.leadership.leader


def test_a_cluster_key_others_can_read_is_warned_about(tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    path = key_file(tmp_path)
    Path(path).chmod(0o644)
    with caplog.at_level("WARNING", logger="lambdad.cluster"):
        assert check_cluster(config("--database", PG, "--cluster-key-file", path,
                                    "--advertise-address", "10.0.0.5:50051")) == "k" * 32
    assert "has mode 644" in caplog.text and "k" * 32 not in caplog.text
    caplog.clear()
    Path(path).chmod(0o600)
    with caplog.at_level("WARNING", logger="lambdad.cluster"):
        check_cluster(config("--database", PG, "--cluster-key-file", path,
                             "--advertise-address", "10.0.0.5:50051"))
    assert "has mode" not in caplog.text
