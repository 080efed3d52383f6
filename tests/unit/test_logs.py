"""Log line parsing, queries, durable storage with rotation, and subscribers."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from lambdad.logs import LogEntry, LogQuery, LogStore, parse_line
from lambdad.logs.entry import parse_docker_line

RID = "0b5e8a1c-3f2d-4c1e-9a7b-123456789abc"


def test_runtime_lines_are_parsed_into_request_ids() -> None:
    start = f"START RequestId: {RID} Version: 3"
    assert parse_line(start) == (RID, start, True)
    assert parse_line(f"END RequestId: {RID}") == (RID, f"END RequestId: {RID}", True)
    report = f"REPORT RequestId: {RID}\tDuration: 1.00 ms"
    assert parse_line(report) == (RID, report, True)
    init = "INIT_REPORT Init Duration: 1.00 ms\tPhase: init\tStatus: error"
    assert parse_line(init) == ("", init, True)
    assert parse_line(f"{RID}\thello\tworld") == (RID, "hello\tworld", False)
    assert parse_line("req-1\thello") == ("req-1", "hello", False)
    assert parse_line("\toutside any request") == ("", "outside any request", False)
    assert parse_line("plain line") == ("", "plain line", False)
    assert parse_line("not a tag\tx") == ("", "not a tag\tx", False)
    assert parse_line("STARTED RequestId: x") == ("", "STARTED RequestId: x", False)


def test_a_tagged_line_is_text_whatever_it_says() -> None:
    """Everything a function writes reaches lambdad behind a tag the runtime chose: no text
    after a tag is a frame, or moves the line to another request."""
    other = "11111111-2222-4333-8444-555555555555"
    for text in (f"START RequestId: {other} Version: 1", f"END RequestId: {other}",
                 f"REPORT RequestId: {other}\tDuration: 1 ms", f"{other}\tmine now",
                 "INIT_REPORT Init Duration: 1 ms", "\tx", "\t\t", ""):
        assert parse_line(f"{RID}\t{text}") == (RID, text, False)
        assert parse_line(f"\t{text}") == ("", text, False)


def test_dockerfile_functions_lines_are_never_framed() -> None:
    """No trusted runtime frames a Dockerfile function's container: all of it is text."""
    for line in (f"START RequestId: {RID} Version: 3", f"{RID}\thello",
                 "INIT_REPORT Init Duration: 1 ms", "\tx"):
        assert parse_line(line, framed=False) == ("", line, False)


def test_docker_timestamps_are_parsed() -> None:
    when, text = parse_docker_line(b"2026-11-26T18:41:21.123456789Z hello world\n")
    assert when == datetime(2026, 11, 26, 18, 41, 21, 123456, tzinfo=UTC)
    assert text == "hello world"
    when, text = parse_docker_line(b"garbage")
    assert text == "garbage" and when.tzinfo is not None


def _entry(n: int, *, version: int = 1, rid: str = "", at: datetime | None = None) -> LogEntry:
    return LogEntry(time=at or datetime.now(UTC), function="f", version=version,
                    instance="i1", stream="stdout", request_id=rid, message=f"line {n}")


def test_queries_filter_by_time_request_version_and_tail() -> None:
    old = datetime.now(UTC) - timedelta(hours=1)
    assert not LogQuery("f", since=datetime.now(UTC)).matches(_entry(1, at=old))
    assert LogQuery("f", request_id=RID).matches(_entry(1, rid=RID))
    assert not LogQuery("f", request_id=RID).matches(_entry(1))
    assert not LogQuery("f", version=2).matches(_entry(1, version=1))
    assert not LogQuery("g").matches(_entry(1))
    entry = _entry(7, rid=RID)
    assert LogEntry.from_json(entry.to_json()) == entry


def test_store_round_trips_rotates_and_caps(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = LogStore(tmp_path, max_file_bytes=2000, files_kept=3)
        store.start()
        try:
            entries = [_entry(n) for n in range(200)]
            for entry in entries:
                store.append(entry)
            everything = await store.read(LogQuery("f"))
            kept = [e.message for e in everything]
            assert kept == [e.message for e in entries][-len(kept):]  # newest kept, in order
            files = sorted(p.name for p in (tmp_path / "f").iterdir())
            assert files[:2] == ["1.jsonl", "2.jsonl"] and len(files) <= 3
            assert sum(p.stat().st_size for p in (tmp_path / "f").iterdir()) < 3 * 2200
            tail = await store.read(LogQuery("f", tail=3))
            assert [e.message for e in tail] == ["line 197", "line 198", "line 199"]
            await store.delete("f")
            assert await store.read(LogQuery("f")) == []
        finally:
            await store.stop()

    asyncio.run(scenario())


def test_entries_survive_a_new_store_on_the_same_folder(tmp_path: Path) -> None:
    async def write() -> None:
        store = LogStore(tmp_path)
        store.start()
        store.append(_entry(1, rid=RID))
        await store.stop()

    async def read() -> list[LogEntry]:
        store = LogStore(tmp_path)
        return await store.read(LogQuery("f", request_id=RID))

    asyncio.run(write())
    assert [e.message for e in asyncio.run(read())] == ["line 1"]


def test_subscribers_get_new_entries_and_can_leave(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = LogStore(tmp_path)
        queue = store.subscribe("f")
        store.append(_entry(1))
        assert (await queue.get()).message == "line 1"
        store.unsubscribe("f", queue)
        assert store.subscriber_count() == 0
        store.append(_entry(2))
        assert queue.empty()

    asyncio.run(scenario())


def test_docker_frames_are_split_into_lines_per_stream() -> None:
    import struct

    from lambdad.logs.docker_stream import FrameDecoder, logs_target

    def frame(kind: int, payload: bytes) -> bytes:
        return struct.pack(">BxxxL", kind, len(payload)) + payload

    decoder = FrameDecoder()
    data = frame(1, b"ts out one\nts out ") + frame(2, b"ts err one\n") + frame(1, b"two\n")
    # Fed in awkward pieces, as the network delivers them.
    lines = []
    for start in range(0, len(data), 5):
        lines += decoder.feed(data[start:start + 5])
    assert lines == [("stdout", b"ts out one"), ("stderr", b"ts err one"),
                     ("stdout", b"ts out two")]
    assert decoder.feed(frame(2, b"no newline")) == []
    assert decoder.finish() == [("stderr", b"no newline")]
    assert decoder.feed(frame(3, b"stdin echo\n")) == []
    target = logs_target("1.41", "abc", None)
    assert target.startswith(b"/v1.41/containers/abc/logs?") and b"follow=1" in target
