"""The supervisor's pure parts: the worker pool's rules, the channel's checks, exit reports."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "packaging" / "runtime" / "python"))

from lambda_runtime import channel
from lambda_runtime.supervisor import NoWorker, Workers, describe_exit


class FakeWorker:
    def __init__(self, n: int) -> None:
        self.n = n
        self.exited = threading.Event()
        self.counted = True


class Spawner:
    """Starts fake workers; `fail` makes the next starts fail, `gate` holds them."""

    def __init__(self) -> None:
        self.started: list[FakeWorker] = []
        self.fail = False
        self.fail_next = 0  # this many starts fail, then they succeed again
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self) -> Any:
        self.gate.wait(5)
        if self.fail_next:
            self.fail_next -= 1
            return None
        if self.fail:
            return None
        worker = FakeWorker(len(self.started))
        self.started.append(worker)
        return worker


def test_a_request_starts_a_worker_only_when_none_is_idle() -> None:
    spawn = Spawner()
    pool = Workers(spawn)
    first = pool.acquire()
    assert spawn.started == [first] and pool.live == 1
    pool.release(first)
    assert pool.acquire() is first  # reused, nothing new started
    second = pool.acquire()  # the first is busy: a second process
    assert second is not first and pool.live == 2
    pool.release(first)
    pool.release(second)
    assert pool.acquire() is second  # the most recently used first


def test_waiting_requests_get_a_released_worker_or_the_one_started_for_them() -> None:
    spawn = Spawner()
    pool = Workers(spawn, cap=1)
    busy = pool.acquire()
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.append(pool.acquire()))
    waiter.start()
    time.sleep(0.05)
    assert got == [] and len(spawn.started) == 1  # at the cap: it waits
    pool.release(busy)
    waiter.join(2)
    assert got == [busy]
    # Under the cap, two waiters while one start is slow: a start per waiter, not more.
    pool = Workers(spawn, cap=10)
    spawn.started.clear()
    spawn.gate.clear()
    results: list[object] = []
    threads = [threading.Thread(target=lambda: results.append(pool.acquire())) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(0.05)
    assert pool.spawning == 2
    spawn.gate.set()
    for t in threads:
        t.join(2)
    assert len(results) == 2 and len(spawn.started) == 2 and pool.live == 2


def test_a_request_during_a_prestart_waits_for_it_instead_of_starting_another() -> None:
    spawn = Spawner()
    pool = Workers(spawn)
    spawn.gate.clear()
    pool.prestart()
    time.sleep(0.05)
    got: list[object] = []
    request = threading.Thread(target=lambda: got.append(pool.acquire()))
    request.start()
    time.sleep(0.05)
    assert pool.spawning == 1  # no second start
    spawn.gate.set()
    request.join(2)
    assert got == spawn.started and pool.live == 1
    # A prestart that fails leaves the waiting request to start its own.
    pool = Workers(spawn)
    spawn.started.clear()
    spawn.gate.clear()
    spawn.fail_next = 1
    pool.prestart()
    time.sleep(0.05)
    got.clear()
    request = threading.Thread(target=lambda: got.append(pool.acquire()))
    request.start()
    time.sleep(0.05)
    assert pool.spawning == 1  # it waits for the prestart
    spawn.gate.set()
    request.join(2)
    assert spawn.fail_next == 0  # the prestart failed...
    assert len(got) == 1 and got == spawn.started  # ...and the request started its own


def test_no_worker_at_all_is_an_error_and_a_lost_one_is_forgotten() -> None:
    spawn = Spawner()
    spawn.fail = True
    pool = Workers(spawn)
    with pytest.raises(NoWorker):
        pool.acquire()
    spawn.fail = False
    worker = pool.acquire()
    pool.release(worker)
    worker.exited.set()
    assert pool.lost(worker)  # idle when it died: removed, not handed out
    assert pool.live == 0 and pool.idle == []
    busy = pool.acquire()
    assert busy is not worker
    assert not pool.lost(busy)  # busy: its request reports it, then discards it
    pool.discard(busy)
    pool.discard(busy)  # counted once
    assert pool.live == 0
    # A start that fails while another worker runs: the request waits for that one.
    running = pool.acquire()
    spawn.fail = True
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.append(pool.acquire()))
    waiter.start()
    time.sleep(0.05)
    assert got == []
    pool.release(running)
    waiter.join(2)
    assert got == [running]
    pool.close()
    with pytest.raises(NoWorker):
        pool.acquire()


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
