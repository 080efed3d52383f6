"""lambdad's reader of a runtime's log channel (lambdad/logs/channel_stream.py) against the
real runtime, in a real instance folder, the way LogCapture.follow_channel runs it; and its
read budget in memory (docs/design-notes/log-channel.md)."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lambdad.logs.channel import RecordDecoder
from lambdad.logs.channel_stream import STEP_ENTRIES, ReadBudget, follow
from lambdad.logs.entry import RUNTIME_STREAM, LogEntry
from lambdad.runtime.folder import SOCKET_NAME, InstanceFolder
from tests.unit.test_runtime_logchannel import APP
from tests.unit.test_runtime_logs import Runtime


def test_the_budget_pauses_reading_past_its_rate_and_refills_with_time() -> None:
    budget = ReadBudget(rate=1000, burst=2000)
    assert budget.spend(1500, 0.0) == 0.0
    assert budget.spend(1000, 0.0) == pytest.approx(0.5)  # 500 bytes over, at 1000 bytes/s
    assert budget.spend(0, 0.5) == 0.0  # the pause paid it back
    assert budget.spend(2500, 10.0) == pytest.approx(0.5)  # refilled to the burst, no more


@pytest.fixture
def places() -> Iterator[tuple[Path, InstanceFolder]]:
    """A task root with the app, and an instance folder (lambdad's kind) for the socket."""
    root = Path(tempfile.mkdtemp(prefix="lr", dir="/tmp"))  # AF_UNIX paths are limited
    (root / "task").mkdir()
    (root / "task" / "app.py").write_text(APP)
    (root / "i").mkdir()
    folder = InstanceFolder.create(root / "i", "inst", owner=os.getuid())
    yield root / "task", folder
    folder.close()
    shutil.rmtree(root, ignore_errors=True)


def start(places: tuple[Path, InstanceFolder], **extra: str) -> Runtime:
    task, folder = places
    return Runtime(task, sock_path=str(folder.path / SOCKET_NAME), **extra)


async def read_while(places: tuple[Path, InstanceFolder], runtime: Runtime,
                     actions: list[tuple[str, dict[str, object]]],
                     budget: ReadBudget | None = None,
                     until: Callable[[list[LogEntry]], bool] = lambda entries: True,
                     ) -> tuple[list[LogEntry], object]:
    """Follows the channel while `actions` are invoked and until `until` holds, then stops
    the runtime: the follow ends with the instance."""
    entries: list[LogEntry] = []
    task = asyncio.create_task(follow(places[1], RecordDecoder("app", 7, "inst"),
                                      entries.append, budget))
    for rid, payload in actions:
        status, _ = await asyncio.to_thread(runtime.invoke, rid, payload)
        assert status == 200
    async with asyncio.timeout(10):
        while not until(entries):
            await asyncio.sleep(0.01)
    await asyncio.to_thread(runtime.stop)
    protocol = await asyncio.wait_for(task, 10)
    return entries, protocol


def test_the_reader_files_an_instance_s_lines_until_it_stops(
        places: tuple[Path, InstanceFolder]) -> None:
    runtime = start(places, LAMBDA_LOG_CHANNEL="1")
    entries, protocol = asyncio.run(read_while(
        places, runtime, [("req-1", {"op": "print"})],
        until=lambda entries: any(e.message.startswith("REPORT") for e in entries)))
    assert protocol is not None and protocol.broken is None  # type: ignore[attr-defined]
    mine = [(e.stream, e.message) for e in entries if e.request_id == "req-1"]
    assert mine[0] == (RUNTIME_STREAM, "START RequestId: req-1 Version: 7")
    assert ("stdout", "hello from req-1") in mine and ("stdout", "from C 5") in mine
    assert mine[-1][1].startswith("REPORT RequestId: req-1\t")
    assert ("stdout", "", "importing app") in [(e.stream, e.request_id, e.message)
                                               for e in entries]
    assert runtime.out.text() == []


def test_a_runtime_without_the_channel_is_refused_not_invoked(
        places: tuple[Path, InstanceFolder]) -> None:
    """An older runtime's answer ends the channel at once (it does not wait for the
    instance's end), and nothing is filed."""
    runtime = start(places)
    entries: list[LogEntry] = []
    try:
        protocol = asyncio.run(asyncio.wait_for(
            follow(places[1], RecordDecoder("app", 7, "inst"), entries.append), 10))
        assert runtime.proc.poll() is None  # still running
    finally:
        runtime.stop()
    assert protocol is not None and "404" in str(protocol.broken)
    assert entries == []


def test_the_reader_never_connects_through_a_link(places: tuple[Path, InstanceFolder]) -> None:
    """A function that swapped its socket for a link to a socket elsewhere (here, a real
    runtime's) gets no reader: the channel opens only through the checked connect."""
    runtime = Runtime(places[0], LAMBDA_LOG_CHANNEL="1")  # its socket outside the folder
    try:
        os.symlink(runtime.sock_path, places[1].path / SOCKET_NAME)
        entries: list[LogEntry] = []
        got = asyncio.run(asyncio.wait_for(  # a reader that connected would wait for more
            follow(places[1], RecordDecoder("app", 7, "inst"), entries.append), 5))
        assert got is None and entries == []
    finally:
        runtime.stop()


def test_a_flood_past_the_budget_pauses_reading_and_the_runtime_counts_what_it_drops(
        places: tuple[Path, InstanceFolder]) -> None:
    runtime = start(places, LAMBDA_LOG_CHANNEL="1")
    budget = ReadBudget(rate=4 << 20, burst=256 << 10)

    def counts(entries: list[LogEntry]) -> tuple[int, int]:
        dropped = sum(int(e.message.split()[2]) for e in entries
                      if e.stream == RUNTIME_STREAM and e.message.startswith("LOGS_DROPPED"))
        delivered = sum(1 for e in entries if e.request_id == "req-x" and e.stream == "stdout")
        return dropped, delivered

    entries, protocol = asyncio.run(read_while(
        places, runtime, [("req-x", {"op": "flood", "n": 8192})], budget,
        until=lambda entries: sum(counts(entries)) == 8192))
    assert protocol.paused_s > 0  # type: ignore[attr-defined]
    assert counts(entries)[0] > 0  # every line delivered or counted, some counted
    assert any(e.message.startswith("REPORT RequestId: req-x\t") for e in entries)


def test_a_flood_of_empty_lines_never_holds_the_loop_for_a_whole_read(
        places: tuple[Path, InstanceFolder]) -> None:
    """Attack: a function writes empty lines (7 bytes each once tagged with its request id):
    one read was up to 37,000 entries decoded in one callback (a blocked daemon loop for a
    large part of a second, again after each 20 ms rest), and the byte budget let 8 MiB/s
    of them through. Entries are now filed a bounded number per turn of the loop, each line
    billed as more bytes than it has."""
    runtime = start(places, LAMBDA_LOG_CHANNEL="1")
    ticks = [0]
    per_tick: dict[int, int] = {}
    dropped = [0]

    def sink(entry: LogEntry) -> None:
        per_tick[ticks[0]] = per_tick.get(ticks[0], 0) + 1
        if entry.stream == RUNTIME_STREAM and entry.message.startswith("LOGS_DROPPED"):
            dropped[0] += int(entry.message.split()[2])

    async def run() -> object:
        async def ticker() -> None:
            while True:
                ticks[0] += 1
                await asyncio.sleep(0)

        tick_task = asyncio.create_task(ticker())
        task = asyncio.create_task(follow(places[1], RecordDecoder("app", 7, "inst"), sink))
        status, _ = await asyncio.to_thread(runtime.invoke, "req-t", {"op": "tiny", "n": 16})
        assert status == 200
        async with asyncio.timeout(20):
            while sum(per_tick.values()) + dropped[0] < 16 * 4096:
                await asyncio.sleep(0.05)
        await asyncio.to_thread(runtime.stop)
        protocol = await asyncio.wait_for(task, 10)
        tick_task.cancel()
        return protocol

    protocol = asyncio.run(run())
    assert protocol is not None and protocol.broken is None  # type: ignore[attr-defined]
    assert sum(per_tick.values()) + dropped[0] >= 16 * 4096  # every line filed or counted
    assert max(per_tick.values()) <= STEP_ENTRIES
