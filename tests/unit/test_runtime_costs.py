"""What the runtime saves per request (issue 16), and that the savings change no output: log
channel sends batched on the loop's timer, REPORT's peak memory read again only when it may
have moved, the event's request time formatted once a second."""

from __future__ import annotations

import calendar
import contextlib
import os
import random
import socket
import sys
import time
from pathlib import Path

from lambdad.logs.channel import RecordDecoder

sys.path.insert(0, str(Path(__file__).parents[2] / "packaging" / "runtime" / "python"))

from lambda_runtime import events, http1, logchannel, logs, supervisor
from lambda_runtime.supervisor import (
    ChannelOutput,
    Loop,
    Output,
    Pipes,
    Worker,
    peak_due,
)


def _attached() -> tuple[ChannelOutput, Loop, socket.socket]:
    output = ChannelOutput(Output())
    loop = Loop(output)
    ours, theirs = socket.socketpair()
    output.attach(ours, loop.sel, loop.later)
    theirs.setblocking(False)
    assert theirs.recv(1 << 16) == logchannel.RESPONSE_HEAD  # the head goes at once
    return output, loop, theirs


def _read(sock: socket.socket) -> bytes:
    with contextlib.suppress(BlockingIOError):
        return sock.recv(1 << 20)
    return b""


def test_channel_writes_go_out_together_after_the_delay_not_one_send_each() -> None:
    output, loop, theirs = _attached()
    sends = 0
    real_send = output._send

    def counted() -> None:
        nonlocal sends
        sends += 1
        real_send()

    output._send = counted  # type: ignore[method-assign]
    for n in range(3):  # three requests' START + line, then END + REPORT
        output.write(0, logs.start_line(f"r{n}", "1") + logs.tag(f"r{n}") + b"hello\n")
        output.write(0, logs.end_lines(f"r{n}", 1000, 128, 9))
    assert _read(theirs) == b"" and sends == 0  # queued, a send armed
    deadline = time.monotonic() + 5
    got = b""
    while len(got) < output.queue.size + len(got) or not got:
        assert time.monotonic() < deadline
        loop.once()  # waits for the timer
        got += _read(theirs)
    assert sends == 1
    entries = RecordDecoder("fn", 1, "i").feed(logchannel.RESPONSE_HEAD + got)
    assert [(e.request_id, e.message.split(" ")[0]) for e in entries] == [
        (f"r{n}", word) for n in range(3) for word in ("START", "hello", "END", "REPORT")]
    output.close(0.1)
    theirs.close()


def test_a_queue_past_the_threshold_is_sent_at_once() -> None:
    output, _, theirs = _attached()
    line = logs.tag("r") + b"x" * 1000 + b"\n"
    for _ in range(supervisor.LOG_SEND_NOW_BYTES // len(line) + 1):
        output.write(1, line)
    assert len(_read(theirs)) >= supervisor.LOG_SEND_NOW_BYTES  # no timer waited for
    output.close(0.1)
    theirs.close()


def test_peak_memory_is_read_again_when_it_may_have_moved() -> None:
    fresh, after = supervisor.PEAK_FRESH_NS, supervisor.PEAK_READ_AFTER_NS
    assert peak_due(10, None, 0)  # never read
    assert not peak_due(10 + fresh - 1, 10, after - 1)  # short request, recent figure
    assert peak_due(10 + fresh, 10, 0)  # the figure is old
    assert peak_due(11, 10, after)  # a long request may have raised it


def test_a_short_request_reports_the_recent_peak_a_long_one_the_kernel_s() -> None:
    """Against this process's own /proc status: a rise of its peak shows after a long request,
    and after a short one only once the figure is PEAK_FRESH_NS old."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    worker = Worker(socket.socketpair()[0], Pipes(Loop(Output()), out_r, err_r))
    worker.status_fd = os.open(f"/proc/{os.getpid()}/status", os.O_RDONLY)
    try:
        first = worker.peak_mb(0)
        assert first > 0
        # More than the peak so far, whatever this process's resident size is now: the
        # high-water mark then rises by 96 MiB at least (a whole suite before this test
        # may have left it far above the current size).
        grown = bytearray((first + 96) << 20)
        grown[::4096] = b"\1" * len(grown[::4096])  # touched: resident
        worker.peak_read_ns = time.monotonic_ns()  # (the allocation itself took a while)
        assert worker.peak_mb(0) == first  # short request, recent figure
        assert worker.peak_mb(supervisor.PEAK_READ_AFTER_NS) >= first + 90
        del grown
        worker.peak_read_ns = time.monotonic_ns() - supervisor.PEAK_FRESH_NS
        assert worker.peak_mb(0) >= first + 90  # never lower than a figure read before
    finally:
        os.close(worker.status_fd)
        for fd in (out_w, err_w):
            os.close(fd)


def test_the_request_time_is_the_same_text_as_formatted_each_time() -> None:
    rng = random.Random(16)
    stamps = sorted(rng.randrange(0, 4_000_000_000_000) for _ in range(300))
    stamps += [stamps[-1] + d for d in (0, 1, 999, 1000, 60_000)]  # same and next seconds
    for ms in stamps:
        t = time.gmtime(ms // 1000)
        expected = time.strftime("%d/%b/%Y:%H:%M:%S +0000", t)  # the C locale here
        assert events._clf_time(ms) == expected
        assert calendar.timegm(time.strptime(events._clf_time(ms)[:-6],
                                             "%d/%b/%Y:%H:%M:%S")) == ms // 1000


def test_stray_crs_are_found_as_the_loop_over_lines_found_them() -> None:
    def as_first_written(head: bytes) -> bool:
        return any(b"\r" in line[:-1] for line in head.split(b"\n"))

    rng = random.Random(1616)
    heads = [b"", b"\r", b"\r\r", b"a\r\n\r\n", b"a\rb\r\n", b"GET / HTTP/1.1\r\n\r\r\n"]
    heads += [bytes(rng.choice(b"\r\nab: ") for _ in range(rng.randrange(0, 24)))
              for _ in range(5000)]
    for head in heads:
        assert http1.stray_crs(head) == as_first_written(head), head
