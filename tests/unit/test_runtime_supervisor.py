"""The supervisor in memory: the worker pool's rules, the channel's checks, exit reports, and
the tagging of a worker's output around its requests."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from lambdad.logs.entry import parse_line

sys.path.insert(0, str(Path(__file__).parents[2] / "packaging" / "runtime" / "python"))

from lambda_runtime import channel, logs
from lambda_runtime.supervisor import Loop, Pipes, Pool, _OomCounter, describe_exit


def test_a_start_for_each_waiting_request_not_covered_up_to_the_cap() -> None:
    pool = Pool(cap=3)
    assert pool.starts_wanted() == 0 and not pool.hopeless()
    pool.waiting.extend(["a", "b"])  # type: ignore[list-item]
    assert pool.starts_wanted() == 2
    pool.starting = 1  # e.g. the first worker, started after the import
    assert pool.starts_wanted() == 1  # one request waits for it, the other needs its own
    pool.starting, pool.live = 0, 2
    pool.waiting.extend(["c", "d"])  # type: ignore[list-item]
    assert pool.starts_wanted() == 1  # the cap: 2 live + 1
    pool.starting, pool.live = 1, 2
    assert pool.starts_wanted() == 0


def test_idle_workers_go_to_waiting_requests_first_come_most_recent_worker() -> None:
    pool = Pool()
    pool.idle.extend(["w1", "w2"])  # type: ignore[list-item]
    pool.waiting.extend(["r1", "r2", "r3"])  # type: ignore[list-item]
    assert pool.pairs() == [("w2", "r1"), ("w1", "r2")]
    assert list(pool.waiting) == ["r3"] and pool.idle == []


def test_requests_fail_only_when_no_worker_lives_or_starts() -> None:
    pool = Pool()
    pool.waiting.append("r")  # type: ignore[arg-type]
    assert pool.hopeless()
    pool.starting = 1
    assert not pool.hopeless()
    pool.starting, pool.live = 0, 1  # busy with another request: wait for it
    assert not pool.hopeless()


def test_reply_sizes_are_bounded_and_statuses_checked() -> None:
    assert channel.reply_sizes(channel.REPLY.pack(200, 10, 20)) == (200, 10, 20)
    for status, headers, body in ((100, 0, 0), (600, 0, 0), (200, 1 << 20, 0),
                                  (200, 0, channel.MAX_REPLY_BODY + 1)):
        with pytest.raises(channel.ProtocolError):
            channel.reply_sizes(channel.REPLY.pack(status, headers, body))


def test_header_lines_from_a_worker_are_validated() -> None:
    good = b"Content-Type: text/plain\r\nX-A: b: c\r\nSet-Cookie: \r\n"
    assert channel.checked_headers(good) == good
    assert channel.checked_headers(b"") == b""
    # Framing is the supervisor's: a worker's Content-Length or Connection is dropped.
    assert channel.checked_headers(
        b"Content-Length: 5\r\nX: y\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n"
    ) == b"X: y\r\n"
    # So is the runtime's word to lambdad: a handler cannot say how many workers fit.
    assert channel.checked_headers(
        b"Lambda-Workers: 1000\r\nX: y\r\nlambda-wait-timeout: 1\r\n") == b"X: y\r\n"
    for bad in (b"X: y", b"X: a\rb\r\n", b"X: a\nb\r\n", b"X: a\0\r\n", b"Bad Name: v\r\n",
                b": v\r\n", b"NoColon\r\n", b"X: ok\r\n\r\nHTTP/1.1 200 OK\r\n",
                b"X:v\r\n"):
        assert channel.checked_headers(bad) is None, bad


def test_requests_and_replies_round_trip() -> None:
    request = ("http", "GET", "/p?q", [("Host", "x"), ("Cookie", "a=1")], b"\x00body",
               "req-1", 123, 456)
    encoded = channel.encode_request(request)
    assert channel.LENGTH.unpack(encoded[:4])[0] == len(encoded) - 4
    assert channel.decode_request(encoded[4:]) == request
    reply = channel.encode_reply(201, [("X-A", "é")], b"data")
    status, header_len, body_len = channel.reply_sizes(reply[:channel.REPLY.size])
    assert (status, body_len) == (201, 4)
    assert reply[channel.REPLY.size:channel.REPLY.size + header_len] == "X-A: é\r\n".encode(
        "latin-1")
    with pytest.raises(UnicodeEncodeError):
        channel.encode_reply(200, [("X", "☃")], b"")


def test_how_a_worker_ended_is_described_as_aws_does() -> None:
    def status_of(code: int) -> int:
        pid = os.fork()
        if pid == 0:
            os._exit(code)
        return os.waitpid(pid, 0)[1]

    assert describe_exit(status_of(3), False, 128) == ("Runtime.ExitError", "exited with code 3")
    pid = os.fork()
    if pid == 0:
        time.sleep(10)
        os._exit(0)
    os.kill(pid, signal.SIGKILL)
    killed = os.waitpid(pid, 0)[1]
    assert describe_exit(killed, False, 128) == ("Runtime.ExitError", "killed by signal 9")
    assert describe_exit(killed, True, 64) == ("Runtime.OutOfMemory",
                                               "out of memory: limit 64 MiB")
    assert describe_exit(None, False, 128) == ("Runtime.ExitError", "stopped answering")


class Collected:
    """The container's stdout and stderr, in memory: (stream, bytes) in write order."""

    def __init__(self) -> None:
        self.writes: list[tuple[int, bytes]] = []

    def write(self, which: int, data: bytes) -> None:
        self.writes.append((which, data))

    def lines(self) -> list[tuple[int, str]]:
        return [(which, line) for which, data in self.writes
                for line in data.decode().splitlines()]


def test_a_workers_output_is_tagged_by_the_request_it_serves_in_memory() -> None:
    """The supervisor's side of one worker's pipes: lines before, during and after a request,
    START with the first line or with END, everything written before the reply drained
    before END, partial lines ended where they belong."""
    output = Collected()
    loop = Loop(output)  # type: ignore[arg-type]
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pipes = Pipes(loop, out_r, err_r)
    os.write(out_w, b"at import\nSTART RequestId: forged Version: 1\npartial ")
    loop.once()  # between requests the loop reads as output comes
    pipes.begin(logs.tag("req-1"), logs.start_line("req-1", "7"))  # the partial line ends here
    assert output.lines() == [(0, "\tat import"), (0, "\tSTART RequestId: forged Version: 1"),
                              (0, "\tpartial ")]
    output.writes.clear()
    os.write(err_w, b"oops\n")
    loop.once()  # the loop reads what the worker wrote: START comes first
    os.write(out_w, b"END RequestId: req-2\nno newline")  # then the worker replies
    pipes.end(((0, logs.end_lines("req-1", 1_000_000, 128, 9)),))
    assert output.lines() == [
        (0, "START RequestId: req-1 Version: 7"), (1, "req-1\toops"),
        (0, "req-1\tEND RequestId: req-2"), (0, "req-1\tno newline"),
        (0, "END RequestId: req-1"),
        (0, "REPORT RequestId: req-1\tDuration: 1.00 ms\tBilled Duration: 1 ms"
            "\tMemory Size: 128 MB\tMax Memory Used: 9 MB")]
    output.writes.clear()
    pipes.begin(logs.tag("req-2"), logs.start_line("req-2", "7"))
    pipes.end(((0, logs.end_lines("req-2", 1, 128, 9)),))  # a request that wrote nothing
    assert len(output.writes) == 1  # START, END and REPORT in one write
    assert output.lines()[0] == (0, "START RequestId: req-2 Version: 7")
    os.write(out_w, b"after\n")
    os.close(out_w)
    os.close(err_w)
    output.writes.clear()
    while not pipes.ended:
        loop.once()
    assert output.lines() == [(0, "\tafter")]
    assert all(parse_line(line).frame is line.startswith(("START", "END", "REPORT"))
               for _, line in output.lines())


def test_each_oom_kill_is_blamed_on_one_killed_worker(tmp_path: Path) -> None:
    """A burst that outgrows the cgroup may have several workers killed at once: each
    SIGKILLed worker claims one of the cgroup's kills (not only the first), and a worker
    that crashed otherwise claims none."""
    events_file = tmp_path / "memory.events"
    events_file.write_text("low 0\noom 0\noom_kill 0\n")
    counter = _OomCounter(False)
    counter.path = str(events_file)
    killed, crashed = signal.SIGKILL, 3 << 8  # wait statuses: SIGKILL, exit code 3
    events_file.write_text("oom 3\noom_kill 3\n")
    assert not counter.claim(crashed) and not counter.claim(None)
    assert [counter.claim(killed) for _ in range(4)] == [True, True, True, False]
    events_file.write_text("oom_kill 4\n")
    assert counter.claim(killed) and not counter.claim(killed)
