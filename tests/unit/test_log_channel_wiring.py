"""What switches the log channel on, and the bounds around it: the LogStore's bounded buffer,
the DROPPED counts reaching a callback, reading paused while the store is congested, the
fallback to Docker's stream for a runtime that does not answer as the channel, the label."""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime
from pathlib import Path

import pytest

from lambdad import labels
from lambdad.logs import channel_stream
from lambdad.logs.capture import LogCapture, Source
from lambdad.logs.channel import COUNTS, DROPPED, HEADER, REQUEST, RecordDecoder
from lambdad.logs.entry import RUNTIME_STREAM, LogEntry, LogQuery
from lambdad.logs.store import ENTRY_BYTES, LogStore
from lambdad.metrics import Metrics
from lambdad.runtime.docker_backend import managed_container, stem_cell_environment
from lambdad.runtime.folder import InstanceFolder
from tests.unit.test_log_channel_reader import places, read_while, start  # noqa: F401

NOW = datetime(2026, 11, 28, tzinfo=UTC)
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.lambda.log-records\r\n\r\n"


def entry(message: str, function: str = "fn") -> LogEntry:
    return LogEntry(datetime.now(UTC), function, 1, "i1", "stdout", "r1", message)


def test_the_store_buffer_is_bounded_and_what_it_drops_is_counted_and_filed(
        tmp_path: Path) -> None:
    told: list[tuple[str, int, int]] = []
    limit = 4 * (100 + ENTRY_BYTES)
    store = LogStore(tmp_path, max_pending_bytes=limit, function_share=1,
                     on_dropped=lambda *args: told.append(args))

    async def scenario() -> list[LogEntry]:
        store.start()
        try:
            assert not store.congested
            for n in range(10):
                store.append(entry(f"{n:03}" + "x" * 97))
            assert store.congested
            await store.flush()
            assert not store.congested
            store.append(entry("after"))
            return await store.read(LogQuery("fn"))
        finally:
            await store.stop()

    found = asyncio.run(scenario())
    messages = [e.message for e in found]
    assert [m[:3] for m in messages[:4]] == ["000", "001", "002", "003"]
    assert messages[4] == "LOGS_DROPPED Lines: 6 Bytes: 600"
    assert found[4].stream == RUNTIME_STREAM and found[4].request_id == ""
    assert messages[5:] == ["after"]
    assert told == [("fn", 6, 600)]


def test_the_decoder_reports_a_runtime_s_dropped_counts() -> None:
    told: list[tuple[int, int]] = []
    decoder = RecordDecoder("fn", 1, "i1", on_dropped=lambda *c: told.append(c))
    record = HEADER.pack(COUNTS.size, DROPPED, 0, 0, 0) + COUNTS.pack(12, 3400)
    assert not decoder.head_done
    entries = decoder.feed(HEAD + record)
    assert decoder.head_done and told == [(12, 3400)]
    assert entries[0].message == "LOGS_DROPPED Lines: 12 Bytes: 3400"


def test_the_metric_counts_drops_by_function_and_where() -> None:
    metrics = Metrics()
    metrics.log_dropped("runtime", "fn", 5, 500)
    metrics.log_dropped("daemon", "fn", 1, 10)
    text = metrics.render().decode()
    assert 'lambdad_log_dropped_lines_total{function="fn",where="runtime"} 5.0' in text
    assert 'lambdad_log_dropped_bytes_total{function="fn",where="daemon"} 10.0' in text


def test_reading_pauses_while_the_store_is_congested(
        places: tuple[Path, InstanceFolder]) -> None:  # noqa: F811
    runtime = start(places, LAMBDA_LOG_CHANNEL="1")
    congested = [True]

    async def scenario() -> tuple[list[LogEntry], object]:
        entries: list[LogEntry] = []
        task = asyncio.create_task(channel_stream.follow(
            places[1], RecordDecoder("app", 7, "inst"), entries.append,
            congested=lambda: bool(congested)))
        async with asyncio.timeout(10):  # the first read: the head and the import's line
            while not entries:
                await asyncio.sleep(0.005)
        status, _ = await asyncio.to_thread(runtime.invoke, "req-1", {"op": "print"})
        assert status == 200
        await asyncio.sleep(0.3)
        held = [e for e in entries if e.request_id == "req-1"]
        congested.clear()
        async with asyncio.timeout(10):
            while not any(e.message.startswith("REPORT") for e in entries):
                await asyncio.sleep(0.01)
        await asyncio.to_thread(runtime.stop)
        protocol = await asyncio.wait_for(task, 10)
        return held, protocol

    held, protocol = asyncio.run(scenario())
    # The first read (the head and the import line) came, then the store was full: the
    # request's lines waited in the runtime until it was not.
    assert held == []
    # paused_s sums the pauses as scheduled (CONGESTED_PAUSE_S each time the store was
    # found congested), not wall time: on a loaded machine the loop's timers fire late and
    # fewer of them fit in the 0.3 s, so only "paused for congestion, more than once" holds.
    assert protocol.paused_s >= 2 * channel_stream.CONGESTED_PAUSE_S  # type: ignore[attr-defined]


class Recording(LogCapture):
    def __init__(self) -> None:
        super().__init__("1.41", lambda e: None)
        self.docker: list[tuple[Source, datetime | None]] = []

    def follow(self, source: Source, *, since: datetime | None = None) -> None:
        self.docker.append((source, since))


def test_a_runtime_that_does_not_answer_as_the_channel_is_followed_on_docker(
        places: tuple[Path, InstanceFolder]) -> None:  # noqa: F811
    runtime = start(places)  # without LAMBDA_LOG_CHANNEL: it answers 404
    capture = Recording()
    source = Source("app", 7, "inst", "c1")
    try:
        async def scenario() -> None:
            capture.follow_channel(source, places[1], since=NOW)
            await capture.stop(grace=10)

        asyncio.run(scenario())
        assert runtime.proc.poll() is None
    finally:
        runtime.stop()
    assert capture.docker == [(source, NOW)]


def test_a_runtime_that_does_not_know_the_log_request_refuses_to_invoke_for_it(
        places: tuple[Path, InstanceFolder]) -> None:  # noqa: F811
    """A runtime from before the channel (here: the request without its header, as such a
    runtime would read it) answers 400 and runs no function code."""
    runtime = start(places)
    try:
        status, _ = runtime.invoke("warm", {"op": "print"})
        assert status == 200
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(5)
        sock.connect(runtime.sock_path)
        sock.sendall(REQUEST.replace(b"Lambda-Log-Channel: 1\r\n", b""))
        answer = sock.recv(65536)
        sock.close()
    finally:
        runtime.stop()
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"InvalidPayload" in answer or b"Invocation" in answer
    assert sum("hello from" in line for line in runtime.out.text()) == 1  # "warm" only


def test_standard_runtimes_start_with_the_channel_and_say_so_in_a_label() -> None:
    assert stem_cell_environment()["LAMBDA_LOG_CHANNEL"] == "1"
    found = managed_container("c1", {labels.FUNCTION: "fn", labels.VERSION: "2",
                                     labels.INSTANCE: "a" * 12, labels.LOGS: "channel"}, True)
    assert found is not None and found.log_channel
    older = managed_container("c2", {labels.FUNCTION: "fn", labels.VERSION: "2",
                                     labels.INSTANCE: "b" * 12}, True)
    assert older is not None and not older.log_channel
    cell = managed_container("c3", {labels.CELL: "x", labels.INSTANCE: "c" * 12,
                                    labels.LOGS: "channel"}, True)
    assert cell is not None and cell.cell and cell.log_channel


@pytest.mark.parametrize("value", ["", "docker", "channel "])
def test_only_the_exact_label_turns_the_channel_on(value: str) -> None:
    found = managed_container("c1", {labels.FUNCTION: "fn", labels.VERSION: "2",
                                     labels.INSTANCE: "a" * 12, labels.LOGS: value}, True)
    assert found is not None and not found.log_channel



def test_reconcile_trusts_the_channel_label_only_on_a_standard_runtime() -> None:
    """A restarted lambdad dials the log channel of a labelled standard runtime, and never of
    a Dockerfile function's container, whatever its labels say."""
    from dataclasses import replace

    from tests.support.runtime import Runtime, run, version

    seen: dict[str, bool] = {}

    async def scenario(root: Path) -> None:
        rt = Runtime(root)
        rt.manager._on_instance = lambda i, e: seen.update({i.version.function: i.log_channel})
        for v in (version("std"), version("old"), version("dock", runtime="docker")):
            rt.manager.register(v)
        await rt.docker.leftover("std", 1, "a00000000001", rt.instances_dir)
        await rt.docker.leftover("old", 1, "a00000000002", rt.instances_dir)
        rt.mark_loaded("a00000000001", "std")
        rt.mark_loaded("a00000000002", "old")
        await rt.docker.leftover("dock", 1, "a00000000003", rt.instances_dir)
        plain = rt.docker.managed
        rt.docker.managed = lambda: [  # type: ignore[method-assign]
            replace(c, log_channel=c.instance != "a00000000002") for c in plain()]
        assert await rt.manager.reconcile() == (3, 0)

    run(scenario)
    assert seen == {"std": True, "old": False, "dock": False}


def test_a_deleted_function_s_buffered_lines_stop_counting_against_the_buffer(
        tmp_path: Path) -> None:
    limit = 4 * (100 + ENTRY_BYTES)
    store = LogStore(tmp_path, max_pending_bytes=limit, function_share=1)

    async def scenario() -> list[LogEntry]:
        store.start()
        try:
            store.append(entry("k" * 100, function="kept"))
            store.append(entry("g" * 100, function="gone"))
            store.append(entry("g" * 100, function="gone"))
            assert store.congested
            await store.delete("gone")
            assert not store.congested  # only kept's one line counts now
            for _ in range(3):  # room for all three: nothing dropped
                store.append(entry("k" * 100, function="kept"))
            return await store.read(LogQuery("kept"))
        finally:
            await store.stop()

    found = asyncio.run(scenario())
    assert [e.message for e in found] == ["k" * 100] * 4
    assert not (tmp_path / "gone").exists()


def test_one_function_s_flood_neither_drops_nor_pauses_another_s_lines(
        tmp_path: Path) -> None:
    """A flood of one function (many instances, or a Dockerfile function's Docker stream,
    which cannot be paused) fills only its own share of the buffer."""
    line = 100 + ENTRY_BYTES
    store = LogStore(tmp_path, max_pending_bytes=16 * line)

    async def scenario() -> list[LogEntry]:
        store.start()
        try:
            for n in range(100):
                store.append(entry(f"{n:03}" + "a" * 97, function="flood"))
            assert store.congested_for("flood")
            assert not store.congested_for("quiet")  # its channels keep reading
            for n in range(4):  # its own share, whole
                store.append(entry(f"{n:03}" + "q" * 97, function="quiet"))
            return await store.read(LogQuery("quiet"))
        finally:
            await store.stop()

    found = asyncio.run(scenario())
    assert [e.message[:3] for e in found] == [f"{n:03}" for n in range(4)]
    flood = asyncio.run(LogStore(tmp_path).read(LogQuery("flood")))
    assert len([e for e in flood if not e.message.startswith("LOGS_DROPPED")]) == 4
    assert flood[-1].message == "LOGS_DROPPED Lines: 96 Bytes: 9600"
