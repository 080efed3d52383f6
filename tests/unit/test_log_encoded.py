"""The log channel's encoded path (lambdad files a channel's lines as bytes, with no object a
line unless someone follows the function): it must file exactly what the entry path files,
drop and count exactly what it drops, and give followers the same entries."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from lambdad.logs.channel import COUNTS, DROPPED, HEADER, LINES, MAX_LINE_BYTES, RecordDecoder
from lambdad.logs.entry import LogEntry, LogQuery
from lambdad.logs.store import ENTRY_BYTES, LogStore

HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.lambda.log-records\r\n\r\n"
RID = "0f8e8c1a-4b7e-4d7a-9c1e-2a3b4c5d6e7f"


def lines_record(lines: list[bytes], stream: int = 1, time_ns: int = 1_764_300_000_123_456_789,
                 ) -> bytes:
    payload = b"".join(line + b"\n" for line in lines)
    return HEADER.pack(len(payload), LINES, stream, 0, time_ns) + payload


def dropped_record(lines: int, size: int) -> bytes:
    return HEADER.pack(COUNTS.size, DROPPED, 0, 0, 7_000_000_000) + COUNTS.pack(lines, size)


def random_line(rng: random.Random) -> bytes:
    """What a runtime writes, and what a function could make it write."""
    text = rng.choice([
        f"START RequestId: {RID} Version: 3", f"END RequestId: {RID}",
        f"REPORT RequestId: {RID}\tDuration: 0.41 ms\tBilled Duration: 1 ms",
        "INIT_REPORT Init Duration: 12.0 ms", f"{RID}\thello from the handler",
        "\ttext outside any request", "START RequestId: not a frame! x", "END RequestId: ",
        f"{RID}\tquotes \" and \\ backslashes, a tab\tand é ü 漢字 🙂",
        f"{RID}\tcontrol \x01\x1f\x7f chars", "no tag at all", "",
        f"{RID}\tline ending in a CR\r",
    ])
    raw = text.encode()
    choice = rng.random()
    if choice < 0.05:
        raw += b"\xff\xfe not utf-8 \xc3"
    elif choice < 0.08:
        raw = f"{RID}\t".encode() + b"y" * (MAX_LINE_BYTES + rng.randrange(3))
    elif choice < 0.1:
        raw = f"{RID}\t".encode() + "é".encode() * (MAX_LINE_BYTES // 2)  # cut inside a char
    return raw


def random_channel(seed: int) -> bytes:
    rng = random.Random(seed)
    records = [HEAD]
    for _ in range(rng.randrange(1, 30)):
        if rng.random() < 0.1:
            records.append(dropped_record(rng.randrange(100), rng.randrange(10_000)))
        else:
            records.append(lines_record([random_line(rng) for _ in range(rng.randrange(1, 12))],
                                        stream=rng.choice([1, 2]),
                                        time_ns=rng.randrange(0, 2_000_000_000_000_000_000)))
    return b"".join(records)


def test_encoded_lines_are_the_entries_json_byte_for_byte() -> None:
    for seed in range(300):
        data = random_channel(seed)
        old = RecordDecoder("fn-é", 3, "inst\"1")
        expected = old.feed(data)
        new = RecordDecoder("fn-é", 3, "inst\"1")
        new.push(data)
        lines: list[bytes] = []
        sizes: list[int] = []
        entries: list[LogEntry] = []
        step = random.Random(seed).choice([1, 3, 64])  # in steps, as the reader takes them
        while new.pending:
            got, got_sizes = new.take_encoded(step, entries if seed % 2 else None)
            assert 0 < len(got) <= step
            lines += got
            sizes += got_sizes
        assert lines == [e.to_json().encode() + b"\n" for e in expected], seed
        assert sizes == [len(e.message) for e in expected]
        assert [LogEntry.from_json(line.decode()) for line in lines] == expected
        if seed % 2:
            assert entries == expected
        else:
            assert entries == []


def test_encoded_appends_file_drop_and_feed_followers_as_entry_appends(tmp_path: Path) -> None:
    """Two stores, one fed entry by entry, one with the same lines encoded: the same files,
    the same drops (the buffer holds four 100-character lines), the same live entries."""
    limit = 4 * (100 + ENTRY_BYTES)
    told: dict[str, list[tuple[str, int, int]]] = {"a": [], "b": []}
    by_entry = LogStore(tmp_path / "a", max_pending_bytes=limit, function_share=1,
                        on_dropped=lambda *args: told["a"].append(args))
    encoded = LogStore(tmp_path / "b", max_pending_bytes=limit, function_share=1,
                       on_dropped=lambda *args: told["b"].append(args))
    record = lines_record([f"{RID}\t{n:03}{'x' * 97}".encode() for n in range(7)])

    async def scenario() -> tuple[list[LogEntry], list[LogEntry], list[LogEntry], list[LogEntry]]:
        by_entry.start()
        encoded.start()
        try:
            follower_a = by_entry.subscribe("fn")
            follower_b = encoded.subscribe("fn")
            assert encoded.follows("fn") and not encoded.follows("other")
            for entry in RecordDecoder("fn", 1, "i1").feed(HEAD + record):
                by_entry.append(entry)
            decoder = RecordDecoder("fn", 1, "i1")
            decoder.push(HEAD + record)
            wanted: list[LogEntry] = []
            lines, sizes = decoder.take_encoded(64, wanted)
            encoded.append_encoded("fn", lines, sizes, wanted)
            assert by_entry.congested and encoded.congested
            await by_entry.flush()
            await encoded.flush()
            live_a = [follower_a.get_nowait() for _ in range(follower_a.qsize())]
            live_b = [follower_b.get_nowait() for _ in range(follower_b.qsize())]
            return (await by_entry.read(LogQuery("fn")), await encoded.read(LogQuery("fn")),
                    live_a, live_b)
        finally:
            await by_entry.stop()
            await encoded.stop()

    filed_a, filed_b, live_a, live_b = asyncio.run(scenario())
    assert [e.message[:3] for e in filed_b[:4]] == ["000", "001", "002", "003"]
    assert filed_b[4].message == "LOGS_DROPPED Lines: 3 Bytes: 300"
    assert [e.message for e in filed_a] == [e.message for e in filed_b]
    assert filed_a[:4] == filed_b[:4]
    assert (tmp_path / "a" / "fn" / "current.jsonl").read_bytes().splitlines()[:4] == \
        (tmp_path / "b" / "fn" / "current.jsonl").read_bytes().splitlines()[:4]
    assert told["a"] == told["b"] == [("fn", 3, 300)]
    assert live_a[:4] == live_b[:4] == filed_b[:4]
    assert [e.message for e in live_a] == [e.message for e in live_b]


def test_lines_nobody_follows_are_filed_without_entries(tmp_path: Path) -> None:
    store = LogStore(tmp_path)
    decoder = RecordDecoder("fn", 1, "i1")
    decoder.push(HEAD + lines_record([f"{RID}\thello".encode(), f"END RequestId: {RID}".encode()]))
    assert not store.follows("fn")
    lines, sizes = decoder.take_encoded(64)
    store.append_encoded("fn", lines, sizes)

    async def scenario() -> list[LogEntry]:
        return await store.read(LogQuery("fn", request_id=RID))

    found = asyncio.run(scenario())
    assert [(e.stream, e.message) for e in found] == [
        ("stdout", "hello"), ("runtime", f"END RequestId: {RID}")]
