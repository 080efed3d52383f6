"""Cluster `logs`: merging nodes' lines by time (pure), and the fan-out in Queries over
in-memory peers (the real gRPC hop is in tests/e2e/test_cluster_observe.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from lambdad.cluster.peers import logs_request
from lambdad.cluster.table import NodeRow
from lambdad.control.queries import NodeSelf, Queries
from lambdad.logs import LogEntry, LogQuery
from lambdad.logs.merge import ReorderBuffer, cut_backlog, merge_by_time

T0 = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)


def line(second: float, message: str, node: str = "") -> LogEntry:
    return LogEntry(time=T0 + timedelta(seconds=second), function="greet", version=1,
                    instance="i", stream="stdout", request_id="", message=message, node=node)


def test_backlogs_merge_by_time_and_tail_applies_across_nodes() -> None:
    a = [line(1, "a1"), line(4, "a4"), line(6, "a6")]
    b = [line(2, "b2"), line(3, "b3"), line(5, "b5")]
    assert [e.message for e in merge_by_time([a, b])] == ["a1", "b2", "b3", "a4", "b5", "a6"]
    # Each node sends its own last 3; the cluster's last 3 are among them.
    assert [e.message for e in merge_by_time([a, b], tail=3)] == ["a4", "b5", "a6"]
    assert merge_by_time([[], []], tail=2) == []


def test_a_followed_backlog_is_cut_to_tail_but_live_lines_are_kept() -> None:
    subscribed = T0 + timedelta(seconds=10)
    batch = [line(12, "live-b"), line(1, "old-a"), line(11, "live-a"), line(2, "old-b"),
             line(3, "old-c")]
    assert [e.message for e in cut_backlog(batch, subscribed, tail=2)] == [
        "old-b", "old-c", "live-a", "live-b"]


def test_the_reorder_window_puts_a_lagging_nodes_line_in_its_place() -> None:
    buffer = ReorderBuffer(0.25)
    buffer.push(line(2, "fast node, newer"), now=100.0)
    assert buffer.release(100.1) == []  # still within the window
    buffer.push(line(1, "slow node, older"), now=100.2)  # arrives late, but in time
    assert [e.message for e in buffer.release(100.26)] == ["slow node, older",
                                                           "fast node, newer"]
    assert len(buffer) == 0 and buffer.next_release() is None


def test_the_reorder_window_holds_newer_lines_that_have_not_waited() -> None:
    buffer = ReorderBuffer(0.25)
    buffer.push(line(1, "first"), now=10.0)
    buffer.push(line(5, "later"), now=10.2)
    assert [e.message for e in buffer.release(10.3)] == ["first"]
    assert buffer.next_release() == 10.2 + 0.25
    assert [e.message for e in buffer.release(10.5)] == ["later"]


def test_a_peer_is_always_asked_local_only_with_the_same_filters() -> None:
    query = LogQuery(function="greet", since=datetime.now(UTC) - timedelta(seconds=30),
                     request_id="r1", version=3, tail=7)
    request = logs_request(query, follow=True)
    assert request.local_only and request.follow
    assert (request.name, request.request_id, request.version, request.tail) == (
        "greet", "r1", 3, 7)
    assert 30 <= request.since_seconds <= 33


# --- Queries over in-memory peers ---

def node(node_id: str, name: str, state: str = "up") -> NodeRow:
    return NodeRow(node_id, name, "127.0.0.1:1", "127.0.0.1:2", "0", state, T0, T0, 1, 0, 0,
                   0, None)


class FakeStore:
    async def get_function(self, name: str) -> Any:
        return object()


class FakePeers:
    def __init__(self, lines: dict[str, list[LogEntry]]) -> None:
        self.lines = lines
        self.up = [node(n, n) for n in lines]
        self.asked: list[tuple[str, LogQuery, bool]] = []
        self.live_streams: dict[str, asyncio.Queue[LogEntry]] = {}

    async def live(self) -> list[NodeRow]:
        return list(self.up)

    async def logs(self, peer: NodeRow, query: LogQuery, *, follow: bool,
                   timeout: float | None = None) -> AsyncIterator[LogEntry]:
        self.asked.append((peer.id, query, follow))
        mine = [e for e in self.lines[peer.id] if query.matches(e)]
        for entry in mine[-query.tail:] if query.tail else mine:
            yield entry
        if follow:
            queue = self.live_streams.setdefault(peer.id, asyncio.Queue())
            while True:
                yield await queue.get()


class LocalQueries(Queries):
    def __init__(self, local: list[LogEntry], peers: FakePeers | None) -> None:
        super().__init__(store=FakeStore(), runtime=None, locks=None,  # type: ignore[arg-type]
                         url=str)
        self.local_lines = local
        self.node = NodeSelf("me", "n0", "", "", "0", T0, cluster=True)
        self.peers = peers
        self.live: asyncio.Queue[LogEntry] = asyncio.Queue()

    async def _local_lines(self, query: LogQuery, *, follow: bool) -> AsyncIterator[LogEntry]:
        mine = [e for e in self.local_lines if query.matches(e)]
        for entry in mine[-query.tail:] if query.tail else mine:
            yield entry
        while follow:
            yield await self.live.get()


def test_logs_merge_every_live_node_by_time_tagged_and_tail_across_nodes() -> None:
    peers = FakePeers({"b": [line(2, "b2", "nb"), line(5, "b5", "nb")],
                       "c": [line(3, "c3", "nc"), line(4, "c4", "nc")]})
    queries = LocalQueries([line(1, "a1"), line(6, "a6")], peers)

    async def read(tail: int) -> list[tuple[str, str]]:
        return [(e.message, e.node) async for e in
                queries.logs(LogQuery("greet", tail=tail), follow=False)]

    assert asyncio.run(read(0)) == [("a1", "n0"), ("b2", "nb"), ("c3", "nc"), ("c4", "nc"),
                                    ("b5", "nb"), ("a6", "n0")]
    assert asyncio.run(read(3)) == [("c4", "nc"), ("b5", "nb"), ("a6", "n0")]
    assert {(peer, follow) for peer, _, follow in peers.asked} == {("b", False), ("c", False)}


def test_local_only_logs_never_ask_a_peer() -> None:
    peers = FakePeers({"b": [line(2, "b2")]})
    queries = LocalQueries([line(1, "a1")], peers)

    async def read() -> list[str]:
        return [e.message async for e in
                queries.logs(LogQuery("greet"), follow=False, local_only=True)]

    assert asyncio.run(read()) == ["a1"]
    assert peers.asked == []


def test_a_peer_that_fails_is_left_out_of_the_merge() -> None:
    class Broken(FakePeers):
        async def logs(self, peer: NodeRow, query: LogQuery, *, follow: bool,
                       timeout: float | None = None) -> AsyncIterator[LogEntry]:
            if peer.id == "c":
                raise ConnectionError("node c is unreachable")
            async for entry in super().logs(peer, query, follow=follow):
                yield entry

    queries = LocalQueries([line(1, "a1")], Broken({"b": [line(2, "b2")], "c": []}))

    async def read() -> list[str]:
        return [e.message async for e in queries.logs(LogQuery("greet"), follow=False)]

    assert asyncio.run(read()) == ["a1", "b2"]


def test_follow_merges_streams_joins_a_node_that_comes_up_and_drops_one_that_goes_down(
) -> None:
    peers = FakePeers({"b": [line(2, "b-old", "nb")], "c": []})
    peers.up = [node("b", "nb")]  # c is down when the follow begins
    queries = LocalQueries([line(1, "a-old")], peers)

    async def scenario() -> list[str]:
        seen: list[str] = []
        stream = queries.logs(LogQuery("greet"), follow=True)

        async def take(n: int) -> None:
            for _ in range(n):
                seen.append((await asyncio.wait_for(anext(stream), 10)).message)

        await take(2)  # both backlogs, in time order
        now = datetime.now(UTC)
        await queries.live.put(replace_time(line(0, "a-live"), now))
        await asyncio.sleep(0.05)
        while "b" not in peers.live_streams:
            await asyncio.sleep(0.01)
        await peers.live_streams["b"].put(replace_time(line(0, "b-live", "nb"),
                                                       now - timedelta(milliseconds=20)))
        await take(2)
        peers.up = [node("c", "nc")]  # b goes down, c comes up
        peers.lines["c"] = [replace_time(line(0, "c-after-up", "nc"),
                                         datetime.now(UTC) + timedelta(seconds=1))]
        await take(1)
        assert any(peer == "c" and follow and q.since is not None and q.tail == 0
                   for peer, q, follow in peers.asked)
        await stream.aclose()
        return seen

    seen = asyncio.run(scenario())
    # b-live is older than a-live though it came later: the window puts it first.
    assert seen == ["a-old", "b-old", "b-live", "a-live", "c-after-up"]


def replace_time(entry: LogEntry, when: datetime) -> LogEntry:
    from dataclasses import replace

    return replace(entry, time=when)
