"""Change announcements (lambdad/cluster/changes.py) and applying them
(Versions.sync/reload_all): hostile payloads are refused, this node's own are skipped,
a change is applied by reading the store, so applying it twice changes nothing."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from lambdad.cluster.changes import MAX_PAYLOAD, Change, ChangeApplier, parse_change
from lambdad.store.database import announce
from tests.support.fakes import control_parts


def payload(**fields: object) -> str:
    return json.dumps(fields)


def test_a_well_formed_announcement() -> None:
    assert parse_change(payload(o="n1", k="fn", n="greet")) == Change("n1", "fn", "greet")
    assert parse_change(payload(o="n1", k="keys")) == Change("n1", "keys", "")


@pytest.mark.parametrize("bad", [
    "",
    "not json",
    "[1, 2]",
    '"fn"',
    "null",
    payload(o="n1", k="fn"),  # a function change without a valid name
    payload(o="n1", k="fn", n="../../etc"),
    payload(o="n1", k="fn", n="Greet"),
    payload(o="n1", k="fn", n="a" * 64),
    payload(o="n1", k="drop-everything", n="x"),
    payload(o="n1", k="fn", n="greet", x="extra"),
    payload(o=1, k="fn", n="greet"),
    payload(o="n1", k=["fn"], n="greet"),
    payload(o="n1", k="fn", n={"$ne": ""}),
    payload(o="o" * 200, k="keys"),
    payload(o="n1", k="keys", n="k" * 300),
    "[" * 5000 + "]" * 5000,  # deep nesting
    payload(o="n1", k="keys", n="x" * (MAX_PAYLOAD + 1)),  # oversized
])
def test_hostile_or_malformed_announcements_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_change(bad)


def test_the_applier_skips_its_own_refuses_bad_ones_and_coalesces() -> None:
    async def main() -> None:
        seen: list[tuple[str, str]] = []
        done = asyncio.Event()

        async def fn(name: str) -> None:
            seen.append(("fn", name))
            done.set()

        async def keys(name: str) -> None:
            seen.append(("keys", name))

        async def reload() -> None:
            seen.append(("*", ""))

        applier = ChangeApplier("me", {"fn": fn, "keys": keys}, reload)
        assert applier.submit(payload(o="me", k="fn", n="greet")) is None  # own
        assert applier.submit("{garbage") is None
        assert applier.submit(payload(o="other", k="slots", n="greet")) is None  # no handler
        assert applier.refused == 1
        for _ in range(3):
            applier.submit(payload(o="other", k="fn", n="greet"))
        applier.submit(payload(o="other", k="keys"))
        assert applier.pending == 2  # nothing applied before start
        applier.start()
        await asyncio.wait_for(done.wait(), 5)
        await asyncio.sleep(0.05)
        assert seen == [("fn", "greet"), ("keys", "")]
        applier.reload_all()
        await asyncio.sleep(0.05)
        assert seen[2:] == [("*", "")]
        await applier.stop()
        # Before the start a full reload covers what was pending.
        waiting = ChangeApplier("me", {"fn": fn, "keys": keys}, reload)
        waiting.submit(payload(o="other", k="fn", n="a"))
        waiting.reload_all()
        assert waiting.pending == 1
        waiting.start()
        await asyncio.sleep(0.05)
        assert seen[3:] == [("*", "")]
        await waiting.stop()

    asyncio.run(main())


def test_a_change_that_fails_is_tried_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("lambdad.cluster.changes.RETRY_AFTER", 0.01)

    async def main() -> None:
        calls = 0

        async def fn(name: str) -> None:
            nonlocal calls
            calls += 1
            if calls < 3:
                raise OSError("store reconnecting")

        async def reload() -> None:
            pass

        applier = ChangeApplier("me", {"fn": fn}, reload)
        applier.start()
        applier.submit(payload(o="other", k="fn", n="greet"))
        for _ in range(100):
            if applier.applied:
                break
            await asyncio.sleep(0.01)
        assert calls == 3 and applier.applied == 1
        await applier.stop()

    asyncio.run(main())


def test_announce_is_nothing_on_sqlite(tmp_path: Path) -> None:
    from lambdad.store.database import open_database

    db = open_database(tmp_path / "x.db")
    announce(db, "fn", "greet")  # no pg_notify on SQLite, and no error


def test_sync_applies_another_nodes_rollback_and_delete_and_is_idempotent(
        tmp_path: Path) -> None:
    """Two control planes on one store: A deploys, rolls back and deletes; B, whose
    routing was loaded at its start, follows each by `sync`. Repeating a sync (a
    duplicate announcement) changes nothing."""

    async def main() -> None:
        async with control_parts(tmp_path / "a") as a, control_parts(tmp_path / "b") as b:
            b_store = b.control._versions._store  # B reads A's database
            b.control._versions._store = a.store
            try:
                await a.deploy("greet")
                await a.deploy("greet")
                assert await b.control.sync_function("greet") == "activated"
                assert b.runtime.active["greet"].number == 2
                assert await b.control.sync_function("greet") == "unchanged"
                assert ("greet", 1) in b.runtime.known
                await a.control.rollback("greet", 1)
                assert await b.control.sync_function("greet") == "activated"
                assert b.runtime.active["greet"].number == 1
                assert await b.control.sync_function("greet") == "unchanged"
                await b.runtime.start_instance(b.runtime.active["greet"])
                await a.control.delete("greet")
                assert await b.control.sync_function("greet") == "removed"
                assert "greet" not in b.runtime.active and b.runtime.instances == []
                assert await b.control.sync_function("greet") == "unchanged"
                # Deleted and deployed again while B was away: a reload finds both.
                await a.deploy("other")
                b.runtime.register(next(iter(b.runtime.known.values())))  # stale route
                assert await b.control.reload_functions() >= 1
                assert sorted(b.runtime.active) == ["other"]
                assert await b.control.reload_functions() == 0
            finally:
                b.control._versions._store = b_store

    asyncio.run(main())


def test_reloading_the_keys_ends_calls_of_keys_revoked_elsewhere() -> None:
    """A key revoked through another node: the reload (its `keys` announcement) ends
    this node's calls that key authorized, as a local revoke does."""
    from lambdad.auth.keys import ApiKey, KeyRing

    ring = KeyRing([])
    live = ApiKey("k1", "reader", "invoker", "00", "d", 1.0)
    other = ApiKey("k2", "writer", "deployer", "00", "d", 1.0)
    ring.load([live, other])
    ended: list[str] = []
    ring.watch("k1", lambda: ended.append("k1"))
    ring.watch("k2", lambda: ended.append("k2"))
    ring.load([live, other])  # unchanged: nothing ends
    assert ended == []
    ring.load([ApiKey("k1", "reader", "invoker", "00", "d", 1.0, revoked_at=2.0), other])
    assert ended == ["k1"] and ring.watching() == 1
    ring.load([])  # gone altogether (a restored backup): its calls end too
    assert ended == ["k1", "k2"] and ring.watching() == 0


def test_sync_drops_the_local_files_of_versions_pruned_elsewhere(tmp_path: Path) -> None:
    async def main() -> None:
        async with control_parts(tmp_path / "a", keep_versions=1) as a, \
                control_parts(tmp_path / "b") as b:
            b.control._versions._store = a.store
            await a.deploy("greet")
            assert await b.control.sync_function("greet") == "activated"
            kept = b.artifacts.path("greet", 1)  # as if B had fetched v1's files
            kept.mkdir(parents=True)
            (kept / "handler.py").write_text("x")
            await a.deploy("greet")  # keep_versions=1 on A: v1 is pruned
            assert (await a.store.versions("greet"))[0].pruned
            await b.control.sync_function("greet")
            assert not kept.exists()
            assert b.runtime.known[("greet", 1)].pruned
            assert b.runtime.active["greet"].number == 2

    asyncio.run(main())


def test_a_change_waiting_for_one_function_holds_up_no_other() -> None:
    """B deploys `slow` (its lock held for minutes) while A's change of `slow` and then a
    key revocation are announced: the revocation is applied at once; `slow`'s change,
    announced again meanwhile, is applied after, once more."""

    async def main() -> None:
        release = asyncio.Event()
        seen: list[str] = []

        async def fn(name: str) -> None:
            if name == "slow":
                await release.wait()
            seen.append(name)

        async def keys(name: str) -> None:
            seen.append("keys")

        async def reload() -> None:
            pass

        applier = ChangeApplier("me", {"fn": fn, "keys": keys}, reload)
        applier.start()
        applier.submit(payload(o="a", k="fn", n="slow"))
        await asyncio.sleep(0.01)
        applier.submit(payload(o="a", k="fn", n="slow"))  # again, while applying
        applier.submit(payload(o="a", k="fn", n="slow"))
        applier.submit(payload(o="a", k="keys"))
        await asyncio.sleep(0.05)
        assert seen == ["keys"]
        release.set()
        await asyncio.sleep(0.05)
        assert seen == ["keys", "slow", "slow"] and applier.busy == 0
        await applier.stop()

    asyncio.run(main())
