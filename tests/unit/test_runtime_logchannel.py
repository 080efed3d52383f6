"""The runtime's log channel (LAMBDA_LOG_CHANNEL=1): records and their bounded queue in
memory, read through lambdad's own decoder (lambdad/logs/channel.py), as lambdad will.

Not switched on in lambdad yet (docs/design-notes/log-channel.md): these tests are the
runtime's half of the contract and the proof that both halves agree.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from lambdad.logs.channel import ChannelBroken, RecordDecoder
from lambdad.logs.entry import RUNTIME_STREAM, LogEntry
from tests.unit.test_runtime_logs import FORGERIES

RUNTIME_DIR = Path(__file__).parents[2] / "packaging" / "runtime" / "python"
sys.path.insert(0, str(RUNTIME_DIR))

from lambda_runtime import logchannel, logs  # noqa: E402


def decode(blob: bytes) -> list[LogEntry]:
    decoder = RecordDecoder("fn", 3, "inst")
    return decoder.feed(logchannel.RESPONSE_HEAD + blob)


def texts(entries: list[LogEntry]) -> list[tuple[str, str, str]]:
    return [(e.stream, e.request_id, e.message) for e in entries]


# --- records and the queue, in memory ---------------------------------------------------------


def test_what_the_runtime_writes_lambdad_reads_frames_tags_and_streams() -> None:
    queue = logchannel.Queue()
    queue.put(1, logs.start_line("req-1", "3") + logs.tag("req-1") + b"hello\n", 10**18)
    queue.put(2, logs.tag("req-1") + b"oops\n" + logs.OUTSIDE + b"[ERROR] x\n", 10**18)
    queue.put(1, logs.end_lines("req-1", 2_000_000, 128, 9), 10**18 + 1000)
    entries = decode(queue.take_all())
    assert texts(entries)[:4] == [
        (RUNTIME_STREAM, "req-1", "START RequestId: req-1 Version: 3"),
        ("stdout", "req-1", "hello"), ("stderr", "req-1", "oops"), ("stderr", "", "[ERROR] x")]
    assert [e.stream for e in entries[4:]] == [RUNTIME_STREAM, RUNTIME_STREAM]
    assert entries[0].time.timestamp() == 10**9
    assert {(e.function, e.version, e.instance) for e in entries} == {("fn", 3, "inst")}


def test_forged_frames_in_a_workers_lines_stay_its_text_over_the_channel() -> None:
    queue = logchannel.Queue()
    tagger = logs.LineTagger()
    data = "\n".join(FORGERIES).encode() + b"\n"
    queue.put(1, tagger.feed(data, logs.tag("aaaa-1")), 1)
    entries = decode(queue.take_all())
    assert texts(entries) == [("stdout", "aaaa-1", text) for text in FORGERIES]


def test_records_are_cut_at_line_ends_below_the_payload_limit() -> None:
    line = logs.tag("req-2") + b"x" * 1000 + b"\n"
    data = line * 700  # about 700 KiB in one write
    records, rest = logchannel.split(b"".join(logchannel.lines_records(1, data, 5)))
    assert rest == b"" and len(records) == 3
    assert all(len(payload) <= logchannel.MAX_PAYLOAD and payload.endswith(b"\n")
               for _, _, payload, _ in records)
    assert b"".join(payload for _, _, payload, _ in records) == data


def test_a_flood_drops_text_keeps_frames_and_says_how_much_it_dropped() -> None:
    queue = logchannel.Queue(text_cap=4096, frame_cap=8192)
    text = logs.tag("req-3") + b"y" * 99 + b"\n"  # 106 bytes a line
    for _ in range(100):
        queue.put(1, text, 1)
    assert queue.size <= 4096
    queue.put(1, logs.start_line("req-4", "1") + text + logs.end_lines("req-4", 1, 128, 1), 2)
    assert queue.size <= 8192
    kept = decode(queue.take_all())
    frames = [e.message.split()[0] for e in kept if e.stream == RUNTIME_STREAM]
    assert frames == ["START", "END", "REPORT"]  # the request's frames survived the flood
    lines = sum(1 for e in kept if e.stream == "stdout")
    queue.put(1, text, 3)  # room again: the count comes first
    first, *rest = decode(queue.take_all())
    assert first.stream == RUNTIME_STREAM and first.request_id == ""
    assert first.message == f"LOGS_DROPPED Lines: {101 - lines} Bytes: {(101 - lines) * 106}"
    assert texts(rest) == [("stdout", "req-3", "y" * 99)]


def test_frames_too_are_dropped_past_the_hard_cap_and_counted() -> None:
    queue = logchannel.Queue(text_cap=1024, frame_cap=2048)
    for n in range(100):
        queue.put(1, logs.end_lines(f"r{n}", 1, 128, 1), 1)
    assert queue.size <= 2048
    assert queue.dropped_lines > 0 and queue.dropped_lines % 2 == 0  # END and REPORT pairs


def test_sent_bytes_are_accounted_and_a_cut_record_is_counted_not_resent() -> None:
    queue = logchannel.Queue()
    queue.put(1, logs.OUTSIDE + b"one\n", 1)
    queue.put(1, logs.OUTSIDE + b"two\n" + logs.OUTSIDE + b"three\n", 1)
    first = len(queue.records[0])
    queue.sent(first + 3)  # the reader took the first record and 3 bytes of the second
    assert bytes(queue.pending()[0]) == queue.records[0][3:]
    queue.cut()  # ...and went away
    assert not queue and queue.size == 0
    assert (queue.dropped_lines, queue.dropped_bytes) == (2, 12)
    queue.report_drops(1)
    assert texts(decode(queue.take_all())) == [
        (RUNTIME_STREAM, "", "LOGS_DROPPED Lines: 2 Bytes: 12")]


# --- lambdad's decoder: what it refuses ------------------------------------------------------


@pytest.mark.parametrize(("blob", "why"), [
    (b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n\r\n{}", "404"),
    (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n", "not the log channel"),
    (logchannel.RESPONSE_HEAD + logchannel.HEADER.pack((1 << 20) + 1, 1, 1, 0, 0), "bytes"),
    (logchannel.RESPONSE_HEAD + logchannel.record(9, 1, b"x\n", 0), "unknown kind"),
    (logchannel.RESPONSE_HEAD + logchannel.record(1, 3, b"x\n", 0), "unknown stream"),
    (logchannel.RESPONSE_HEAD + logchannel.record(1, 1, b"cut", 0), "does not end a line"),
    (logchannel.RESPONSE_HEAD + logchannel.record(2, 0, b"\0" * 8, 0), "DROPPED record"),
    (logchannel.RESPONSE_HEAD + logchannel.HEADER.pack(2, 1, 1, 7, 0) + b"x\n", "flags"),
    (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 2000, "no end of head"),
])
def test_the_decoder_ends_a_channel_that_breaks_the_format(blob: bytes, why: str) -> None:
    with pytest.raises(ChannelBroken, match=why):
        RecordDecoder("fn", 1, "i").feed(blob)


def test_the_decoder_takes_bytes_in_any_pieces() -> None:
    queue = logchannel.Queue()
    for n in range(50):
        queue.put(1 + n % 2, logs.tag(f"r-{n}") + f"line {n}\n".encode(), n)
    blob = logchannel.RESPONSE_HEAD + queue.take_all()
    decoder = RecordDecoder("fn", 1, "i")
    got = [entry for at in range(0, len(blob), 7) for entry in decoder.feed(blob[at:at + 7])]
    assert texts(got) == [(("stdout", "stderr")[n % 2], f"r-{n}", f"line {n}")
                          for n in range(50)]
