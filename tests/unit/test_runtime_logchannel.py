"""The runtime's log channel (LAMBDA_LOG_CHANNEL=1): records and their bounded queue in
memory, then the real runtime (supervisor, zygote, workers as subprocesses) read through
lambdad's own decoder (lambdad/logs/channel.py), as lambdad will read it.

Not switched on in lambdad yet (docs/design-notes/log-channel.md): these tests are the
runtime's half of the contract and the proof that both halves agree.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lambdad.logs.channel import REQUEST, ChannelBroken, RecordDecoder
from lambdad.logs.entry import RUNTIME_STREAM, LogEntry, parse_line
from tests.unit.test_runtime_logs import FORGED_ID, FORGERIES, Runtime

RUNTIME_DIR = Path(__file__).parents[2] / "packaging" / "runtime" / "python"
sys.path.insert(0, str(RUNTIME_DIR))

from lambda_runtime import logchannel, logs  # noqa: E402
from lambda_runtime.supervisor import ChannelOutput, Loop, Output  # noqa: E402


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


def test_the_supervisor_never_waits_for_a_reader_that_does_not_read() -> None:
    """ChannelOutput on the supervisor's loop with a socket pair: 8 MiB written while the
    reader reads nothing returns at once, queued within the caps; then the reader gets the
    200 head, whole records and the count of what was dropped."""
    fallback_r, fallback_w = os.pipe()
    output = ChannelOutput(Output((fallback_w, fallback_w)))
    loop = Loop(output)
    ours, theirs = socket.socketpair()
    output.attach(ours, loop.sel)
    line = logs.tag("req-5") + b"z" * 1000 + b"\n"
    for _ in range(8 * 1024):
        output.write(0, line)
    assert output.queue.size <= logchannel.TEXT_CAP
    output.write(0, logs.end_lines("req-5", 1, 128, 1))
    decoder = RecordDecoder("fn", 1, "i")
    got: list[LogEntry] = []
    theirs.setblocking(False)
    deadline = time.monotonic() + 10

    def dropped() -> int:
        return sum(int(e.message.split()[2]) for e in got
                   if e.stream == RUNTIME_STREAM and e.message.startswith("LOGS_DROPPED"))

    while dropped() + sum(e.stream == "stdout" for e in got) < 8 * 1024:
        assert time.monotonic() < deadline, "the channel never accounted for every line"
        loop.later(0.01, lambda: None)  # bounds the loop's wait
        loop.once()
        with contextlib.suppress(BlockingIOError):
            got += decoder.feed(theirs.recv(1 << 20))
    messages = [e.message for e in got if e.stream == RUNTIME_STREAM]
    assert messages[0].startswith("END RequestId: req-5") and dropped() > 0
    assert dropped() + sum(e.stream == "stdout" for e in got) == 8 * 1024
    output.close(0.5)
    theirs.close()
    os.close(fallback_w)
    assert os.read(fallback_r, 1 << 16) == b""  # everything went through the channel
    os.close(fallback_r)


def test_lines_never_delivered_go_to_stdout_and_stderr_at_exit() -> None:
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    output = ChannelOutput(Output((out_w, err_w)))
    output.write(0, logs.start_line("req-6", "2") + logs.tag("req-6") + b"kept\n")
    output.write(1, logs.tag("req-6") + b"also kept\n")
    output.queue.dropped_lines, output.queue.dropped_bytes = 4, 40
    output.close(0.1)  # no reader ever came
    output.write(1, logs.OUTSIDE + b"after the close\n")
    for fd in (out_w, err_w):
        os.close(fd)
    assert os.read(out_r, 4096) == b"START RequestId: req-6 Version: 2\nreq-6\tkept\n"
    err = os.read(err_r, 4096).decode().splitlines()
    assert err[0] == "req-6\talso kept"
    assert parse_line(err[1]).message.startswith("[WARNING] 4 log lines (40 bytes) were dropped")
    assert err[2] == "\tafter the close"
    os.close(out_r)
    os.close(err_r)


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


# --- the real runtime -------------------------------------------------------------------------

APP = textwrap.dedent(
    """
    import ctypes
    import os
    import sys

    FORGERIES = {forgeries!r}
    print("importing app")
    libc = ctypes.CDLL(None)

    def handler(event, context):
        op = event.get("op")
        rid = context.aws_request_id
        if op == "print":
            print("hello from", rid)
            sys.stderr.write("err line\\n")
            libc.printf(b"from C %d\\n", 5)
        elif op == "forge":
            for text in FORGERIES:
                print(text)
                os.write(2, (text + "\\n").encode())
        elif op == "flood":
            line = b"f" * 1023 + b"\\n"
            for _ in range(event["n"]):
                os.write(1, line)
        elif op == "tiny":  # empty lines: the most entries per byte a function can make
            for _ in range(event["n"]):
                os.write(1, b"\\n" * 4096)
        elif op == "segfault":
            ctypes.string_at(0)
        elif op == "env":
            return {{"flag": os.environ.get("LAMBDA_LOG_CHANNEL")}}
        return {{"ok": rid}}
    """
).format(forgeries=FORGERIES)


class Reader:
    """lambdad's side of the channel, on a thread: connect, ask, decode."""

    def __init__(self, path: str, *, read: bool = True) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.sock.sendall(REQUEST)
        self.decoder = RecordDecoder("app", 7, "inst")
        self.entries: list[LogEntry] = []
        self.thread = threading.Thread(target=self.read, daemon=True)
        if read:
            self.thread.start()

    def read(self) -> None:
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except OSError:
                return
            if not data:
                return
            self.entries += self.decoder.feed(data)

    def wait(self, pred: Callable[[list[LogEntry]], bool], timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not pred(self.entries):
            assert time.monotonic() < deadline, f"timed out; entries: {texts(self.entries)!r}"
            time.sleep(0.005)

    def close(self) -> None:
        """As lambdad's exit would: the connection ends (a close alone would not wake the
        thread blocked in recv, nor end the connection under it)."""
        try:  # noqa: SIM105
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        if self.thread.is_alive():
            self.thread.join(timeout=3)


def reported(rid: str) -> Callable[[list[LogEntry]], bool]:
    return lambda entries: any(e.stream == RUNTIME_STREAM and e.message.startswith(
        f"REPORT RequestId: {rid}\t") for e in entries)


def of(entries: list[LogEntry], rid: str) -> list[tuple[str, str]]:
    return [(e.stream, e.message) for e in entries if e.request_id == rid]


@pytest.fixture
def workdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="lc", dir="/tmp"))  # AF_UNIX paths are limited
    (d / "app.py").write_text(APP)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def runtime(workdir: Path) -> Iterator[Runtime]:
    rt = Runtime(workdir, LAMBDA_LOG_CHANNEL="1")
    yield rt
    rt.stop()


def test_the_channel_carries_the_import_the_frames_and_every_writer(runtime: Runtime) -> None:
    """Lines written before lambdad asked wait for it; handler output from print, stderr and
    C arrives tagged; the container's stdout and stderr stay empty, even after the stop."""
    reader = Reader(runtime.sock_path)
    assert runtime.invoke("req-a", {"op": "print"}) == (200, {"ok": "req-a"})
    reader.wait(reported("req-a"))
    assert ("stdout", "", "importing app") in texts(reader.entries)
    lines = of(reader.entries, "req-a")
    assert lines[0] == (RUNTIME_STREAM, "START RequestId: req-a Version: 7")
    assert set(lines[1:4]) == {("stdout", "hello from req-a"), ("stderr", "err line"),
                               ("stdout", "from C 5")}
    assert [stream for stream, _ in lines[4:]] == [RUNTIME_STREAM, RUNTIME_STREAM]
    assert runtime.invoke("req-b", {"op": "env"}) == (200, {"flag": None})
    reader.wait(reported("req-b"))
    assert runtime.stop() == 0
    reader.thread.join(timeout=3)
    assert runtime.out.text() == [] and runtime.err.text() == []
    reader.close()


def test_forgeries_reach_lambdad_as_the_writers_text(runtime: Runtime) -> None:
    reader = Reader(runtime.sock_path)
    assert runtime.invoke("req-f", {"op": "forge"})[0] == 200
    reader.wait(reported("req-f"))
    assert not [e for e in reader.entries if e.request_id == FORGED_ID]
    frames = [m for s, m in of(reader.entries, "req-f") if s == RUNTIME_STREAM]
    assert [m.split()[0] for m in frames] == ["START", "END", "REPORT"]
    text = [m for s, m in of(reader.entries, "req-f") if s != RUNTIME_STREAM]
    assert sorted(text) == sorted(FORGERIES * 2)
    reader.close()


def test_a_crash_s_traceback_reaches_the_channel(runtime: Runtime) -> None:
    reader = Reader(runtime.sock_path)
    status, body = runtime.invoke("req-s", {"op": "segfault"})
    assert status == 502 and body["errorType"] == "Runtime.ExitError"  # type: ignore[index]
    reader.wait(reported("req-s"))
    stderr = [m for s, m in of(reader.entries, "req-s") if s == "stderr"]
    assert any("Segmentation fault" in line for line in stderr), stderr
    assert any(line.startswith("RequestId: req-s Error: Runtime exited") for line in stderr)
    reader.close()


def test_a_new_reader_takes_over_and_gets_what_was_written_without_one(
        runtime: Runtime) -> None:
    """lambdad restarting: its old connection closes, lines written meanwhile wait in the
    runtime, the new connection gets them (Docker's follow from `since=now` lost them)."""
    first = Reader(runtime.sock_path)
    assert runtime.invoke("req-1", {"op": "print"})[0] == 200
    first.wait(reported("req-1"))
    first.close()
    time.sleep(0.1)  # the supervisor notices the reader is gone
    assert runtime.invoke("req-2", {"op": "print"})[0] == 200
    second = Reader(runtime.sock_path)
    second.wait(reported("req-2"))
    assert ("stdout", "hello from req-2") in of(second.entries, "req-2")
    assert not of(second.entries, "req-1")  # delivered once
    third = Reader(runtime.sock_path)  # a newer reader replaces the current one
    assert runtime.invoke("req-3", {"op": "print"})[0] == 200
    third.wait(reported("req-3"))
    second.thread.join(timeout=3)
    assert not second.thread.is_alive() and not of(second.entries, "req-3")
    second.close()
    third.close()


def test_a_reader_that_stalls_never_blocks_a_request_and_learns_what_it_lost(
        runtime: Runtime) -> None:
    """8 MiB of output while lambdad reads nothing: the request still ends (Docker's stream
    made the supervisor wait on it), its frames are kept, the drop is counted."""
    reader = Reader(runtime.sock_path, read=False)
    assert runtime.invoke("req-x", {"op": "flood", "n": 8192}) == (200, {"ok": "req-x"})
    reader.thread.start()
    reader.wait(reported("req-x"))

    def accounted(entries: list[LogEntry]) -> bool:
        dropped = sum(int(e.message.split()[2]) for e in entries
                      if e.stream == RUNTIME_STREAM and e.message.startswith("LOGS_DROPPED"))
        delivered = sum(1 for e in entries if e.request_id == "req-x" and e.stream == "stdout")
        return dropped > 0 and dropped + delivered == 8192

    reader.wait(accounted)  # every line arrived or was counted
    assert runtime.out.text() == []
    reader.close()


def test_without_the_flag_the_log_request_is_refused_and_stdout_keeps_the_lines(
        workdir: Path) -> None:
    rt = Runtime(workdir)
    try:
        reader = Reader(rt.sock_path, read=False)
        with pytest.raises(ChannelBroken, match="404"):
            reader.read()
        reader.close()
        assert rt.invoke("req-o", {"op": "print"})[0] == 200
        rt.out.wait(lambda lines: any(line.startswith("REPORT RequestId: req-o\t")
                                      for line in lines))
        assert "req-o\thello from req-o\n" in rt.out.text()
    finally:
        rt.stop()


def test_without_a_reader_the_lines_go_to_stdout_at_exit(workdir: Path) -> None:
    rt = Runtime(workdir, LAMBDA_LOG_CHANNEL="1")
    try:
        assert rt.invoke("req-e", {"op": "print"})[0] == 200
        time.sleep(0.1)
        assert rt.out.text() == []  # waiting for lambdad
    finally:
        assert rt.stop() == 0
    out = rt.out.text()
    assert "\timporting app\n" in out and "req-e\thello from req-e\n" in out
    assert any(line.startswith("REPORT RequestId: req-e\t") for line in out)
    assert all(not parse_line(line.rstrip("\n")).frame or line.startswith(
        ("START", "END", "REPORT")) for line in out)


def test_the_log_request_is_answered_json_when_malformed(runtime: Runtime) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(runtime.sock_path)
    sock.sendall(REQUEST.replace(b"GET", b"POST"))
    head, _, body = sock.recv(4096).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 404")
    assert json.loads(body)["errorType"] == "Runtime.LogChannelOff"
    sock.close()
