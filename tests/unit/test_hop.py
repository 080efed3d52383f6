"""The instance hop: the request's encoding, and hostile responses as attacks.

The function is the attacker: every response below comes from an instance trying to
smuggle a second answer past the first, crash or confuse the parser, or leave bytes
that the next caller would read as its answer. `ResponseReader` is pure, so most cases
are bytes in memory; the I/O edge (`UpstreamConnection`) is driven against a scripted
server on a real Unix socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import h11
import pytest

from lambdad.runtime.hop import (
    HEAD_LIMIT,
    ResponseReader,
    check_framing,
    encode_request,
    parse_workers,
    runtime_control,
)
from lambdad.runtime.upstream import MAX_BUFFER, UpstreamConnection, UpstreamError

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"


def read(*chunks: bytes, head_only: bool = False) -> ResponseReader:
    reader = ResponseReader()
    reader.start(head_only)
    for chunk in chunks:
        reader.feed(chunk)
    return reader


# The request


def test_the_request_is_one_valid_http11_message_with_content_length() -> None:
    payload = encode_request(b"POST", b"/p?q=1", [(b"Host", b"a.localhost"), (b"x-a", b"b")],
                             b"lambda-request-id: r1\r\n", b"body", b"a.lambda")
    server = h11.Connection(h11.SERVER)
    server.receive_data(payload)
    request = server.next_event()
    assert isinstance(request, h11.Request)
    assert request.method == b"POST" and request.target == b"/p?q=1"
    assert list(request.headers) == [(b"host", b"a.localhost"), (b"x-a", b"b"),
                                     (b"lambda-request-id", b"r1"), (b"content-length", b"4")]
    data = server.next_event()
    assert isinstance(data, h11.Data) and data.data == b"body"
    assert isinstance(server.next_event(), h11.EndOfMessage)


def test_a_request_without_host_gets_the_functions_and_a_get_no_length() -> None:
    payload = encode_request(b"GET", b"/", [], b"", b"", b"f.lambda")
    assert payload == b"GET / HTTP/1.1\r\nhost: f.lambda\r\n\r\n"
    assert b"content-length: 0" in encode_request(b"PUT", b"/", [], b"", b"", b"f.lambda")


# Responses that are fine


def test_a_response_with_its_body_in_one_read_is_complete_and_reusable() -> None:
    reader = read(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi")
    assert reader.complete and reader.reusable and reader.status == 200
    assert reader.headers == [(b"content-type", b"text/plain"), (b"content-length", b"2")]
    assert reader.take_body() == b"hi"


def test_a_chunked_body_split_anywhere_is_reassembled_and_its_trailers_dropped() -> None:
    raw = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n")
    for cut in range(1, len(raw)):
        reader = read(raw[:cut], raw[cut:])
        assert reader.complete and reader.reusable, cut
        assert reader.take_body() == b"abcde"
        assert reader.headers == [(b"transfer-encoding", b"chunked")]


def test_interim_responses_are_skipped() -> None:
    reader = read(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
                  + OK)
    assert reader.complete and reader.reusable and reader.status == 200
    assert reader.headers == [(b"content-length", b"2")] and reader.take_body() == b"hi"


@pytest.mark.parametrize("status", [204, 304])
def test_204_and_304_have_no_body_whatever_their_length_says(status: int) -> None:
    reader = read(b"HTTP/1.1 %d X\r\nContent-Length: 5\r\n\r\n" % status)
    assert reader.complete and reader.reusable and reader.take_body() == b""


def test_a_head_response_ends_at_its_head_despite_its_length() -> None:
    reader = read(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", head_only=True)
    assert reader.complete and reader.reusable and reader.take_body() == b""
    reader.start(head_only=False)  # the next request on the same connection
    reader.feed(OK)
    assert reader.complete and reader.take_body() == b"hi"


def test_a_body_framed_by_the_close_ends_with_it_and_is_not_reused() -> None:
    reader = read(b"HTTP/1.1 200 OK\r\n\r\nsome", b" more")
    assert reader.head_done and not reader.complete
    reader.eof()
    assert reader.complete and not reader.reusable and reader.error is None
    assert reader.take_body() == b"some more"


@pytest.mark.parametrize("response", [
    b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi",
    b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi",
])
def test_a_response_that_closes_is_not_reused(response: bytes) -> None:
    reader = read(response)
    assert reader.complete and not reader.reusable


# Attacks: the exchange breaks (502), and the connection is never reused


@pytest.mark.parametrize("response", [
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"2\r\nhi\r\n0\r\n\r\n", id="content-length-and-chunked"),
    pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n"
                 b"2\r\nhi\r\n0\r\n\r\n", id="chunked-and-content-length"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 7\r\n\r\nhi",
                 id="two-content-lengths"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 2, 7\r\n\r\nhi", id="a-length-list"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nhi", id="negative-length"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\nhi",
                 id="overflowing-length"),
    pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nhi", id="gzip-encoding"),
    pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
                 id="gzip-then-chunked"),
    pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked"
                 b"\r\n\r\n2\r\nhi\r\n0\r\n\r\n", id="two-transfer-encodings"),
    pytest.param(b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\nhi", id="obs-fold"),
    pytest.param(b"HTTP/1.1 200 OK\r\nX-A: a\rSet-Cookie: x\r\nContent-Length: 2\r\n\r\nhi",
                 id="bare-cr-in-a-value"),
    pytest.param(b"HTTP/1.1 200 OK\r\nX-A: a\nSet-Cookie: x\r\nContent-Length: 2\r\n\r\nhi",
                 id="bare-lf-in-a-value"),
    pytest.param(b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\nhi",
                 id="nul-in-a-value"),
    pytest.param(b"HTTP/1.1 200 OK\r\nX A: b\r\nContent-Length: 2\r\n\r\nhi", id="space-in-a-name"),
    pytest.param(b"HTTP/1.1 200 OK\nContent-Length: 2\n\nhi", id="lf-only-lines"),
    pytest.param(b"HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nhi", id="four-digit-status"),
    pytest.param(b"HTTP/1.1 099 OK\r\nContent-Length: 2\r\n\r\nhi", id="status-below-100"),
    pytest.param(b"HTTP/9.9 200 OK\r\nContent-Length: 2\r\n\r\nhi", id="unknown-version"),
    pytest.param(b"HTTX/1.1 200 OK\r\n\r\n", id="not-http"),
    pytest.param(b"HTTP/1.1 200 O\x00K\r\nContent-Length: 2\r\n\r\nhi", id="nul-in-the-reason"),
    pytest.param(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n",
                 id="switching-protocols"),
    pytest.param(b"HTTP/1.1 101 Switching Protocols\r\n\r\n", id="bare-101"),
    pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhi\r\n0\r\n\r\n",
                 id="bad-chunk-size"),
])
def test_a_malformed_or_ambiguous_response_breaks_the_exchange(response: bytes) -> None:
    reader = read(response)
    assert reader.error is not None and not reader.reusable and not reader.complete
    # whatever comes next is never parsed as an answer
    reader.feed(OK)
    assert not reader.complete and not reader.reusable


def test_a_head_larger_than_the_limit_is_refused_in_one_read_or_many() -> None:
    big = b"HTTP/1.1 200 OK\r\n" + b"X-Big: " + b"a" * HEAD_LIMIT + b"\r\nContent-Length: 0\r\n\r\n"
    assert read(big).error is not None  # in one read, head complete
    reader = read(*(big[i:i + 4096] for i in range(0, len(big), 4096)))
    assert reader.error is not None and not reader.head_done
    many = b"HTTP/1.1 200 OK\r\n" + b"X-A: b\r\n" * (HEAD_LIMIT // 6) + b"\r\n"
    assert read(many).error is not None


def test_a_never_ending_head_is_refused_once_past_the_limit() -> None:
    reader = ResponseReader()
    reader.start(False)
    reader.feed(b"HTTP/1.1 200 OK\r\n")
    fed = 0
    while reader.error is None and fed < 4 * HEAD_LIMIT:
        reader.feed(b"X-A: b\r\n" * 64)
        fed += 8 * 64
    assert reader.error is not None and fed <= HEAD_LIMIT + 1024


def test_a_never_ending_trailer_or_chunk_extension_is_refused_once_past_the_limit() -> None:
    """Attack: after a chunked body's last chunk, a trailer value that never ends.
    httptools joins a header value's pieces in Python, trailers too: 128 MiB of it took
    the reader 100 s of CPU (quadratic) and 250 MiB, the daemon's loop held throughout."""
    many = b"X-A: b\r\n" * 512
    for start, filler in ((b"0\r\nX-T: ", b"v" * 4096), (b"1;ext=", b"v" * 4096),
                          (b"0\r\n", many)):
        reader = ResponseReader()
        reader.start(False)
        reader.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n" + start)
        fed = 0
        while reader.error is None and fed < 64 * HEAD_LIMIT:
            reader.feed(filler)
            fed += len(filler)
        assert reader.error is not None and fed <= 2 * HEAD_LIMIT, start
        assert reader.take_body() == b"hello"


def test_a_long_chunked_body_of_tiny_chunks_is_not_refused() -> None:
    reader = ResponseReader()
    reader.start(False)
    reader.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    for _ in range(4 * HEAD_LIMIT // 64):
        reader.feed(b"1;e=x\r\na\r\n" * 64)
    reader.feed(b"0\r\nX-Trailer: t\r\n\r\n")
    assert reader.error is None and reader.complete and reader.reusable
    assert reader.take_body() == b"a" * (4 * HEAD_LIMIT)


def test_a_body_longer_than_announced_is_stray_not_a_second_answer() -> None:
    forged = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged"
    for extra in (forged, b"garbage", forged[:10]):
        reader = read(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi" + extra)
        assert reader.complete and reader.stray and not reader.reusable
        assert reader.take_body() == b"hi"  # the forged body is not appended
        reader = read(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi", extra)
        assert reader.stray and not reader.reusable


def test_a_head_response_followed_by_anything_is_not_reused() -> None:
    for data in (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
                 b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n" + OK[:-2] + b"\r\n\r\n",
                 b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"):
        reader = read(data, head_only=True)
        assert reader.complete and reader.stray and not reader.reusable, data


def test_a_close_mid_body_or_mid_head_is_a_failure() -> None:
    reader = read(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
    reader.eof()
    assert reader.error is not None and not reader.complete
    reader = read(b"HTTP/1.1 200 OK\r\nContent-")
    reader.eof()
    assert reader.error is not None


def test_framing_rules() -> None:
    assert check_framing([(b"content-length", b"3")])
    assert check_framing([(b"transfer-encoding", b" Chunked ")])
    assert not check_framing([(b"content-type", b"x")])
    with pytest.raises(ValueError):
        check_framing([(b"transfer-encoding", b"identity")])


# The I/O edge, against a scripted instance on a real Unix socket

def run(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Runs an async test in its own loop (pytest sees the test's own arguments)."""
    @functools.wraps(test)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))
    return wrapper


Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def instance(tmp_path: Path, script: Script) -> AsyncIterator[Callable[[], Awaitable[
        UpstreamConnection]]]:
    path = str(tmp_path / "invoke.sock")
    server = await asyncio.start_unix_server(script, path)

    async def connect() -> UpstreamConnection:
        _, conn = await asyncio.get_running_loop().create_unix_connection(
            UpstreamConnection, path)
        return conn

    try:
        yield connect
    finally:
        server.close()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    return head.split(b" ")[1]


def payload(target: bytes) -> bytes:
    return encode_request(b"GET", target, [], b"", b"", b"t.lambda")


async def exchange(conn: UpstreamConnection, target: bytes,
                   deadline: float = 5.0) -> tuple[int, bytes]:
    loop = asyncio.get_running_loop()
    status, _ = await conn.request(payload(target), head_only=False,
                                   deadline=loop.time() + deadline)
    chunks = []
    while (chunk := await conn.next_chunk()) is not None:
        chunks.append(chunk)
    return status, b"".join(chunks)


@run
async def test_a_connection_is_reused_for_the_next_request(tmp_path: Path) -> None:
    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            target = await read_request(r)
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(target), target))

    async with instance(tmp_path, script) as connect:
        conn = await connect()
        assert conn.is_fresh
        for target in (b"/a", b"/bb", b"/ccc"):
            assert await exchange(conn, target) == (200, target)
            assert conn.recycle()
        conn.close()


@run
async def test_bytes_past_the_answer_never_answer_the_next_request(tmp_path: Path) -> None:
    """The old h11 hop's rule, kept: a second answer right behind the first, or one
    sent later to no request, makes the connection stray; it is not recycled."""
    forged = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged"

    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        target = await read_request(r)
        if target == b"/twice":
            w.write(OK + forged)
        else:
            w.write(OK)
            await w.drain()
            await asyncio.sleep(0.05)
            w.write(forged)
        await r.read()

    async with instance(tmp_path, script) as connect:
        for target in (b"/twice", b"/later"):
            conn = await connect()
            assert await exchange(conn, target) == (200, b"hi")
            await asyncio.sleep(0.2)
            assert conn.stray and not conn.recycle()
            conn.close()


@run
async def test_an_answer_sent_before_the_request_was_read_is_stray(tmp_path: Path) -> None:
    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(OK)  # on accept, before any request
        await w.drain()
        await r.read()

    async with instance(tmp_path, script) as connect:
        conn = await connect()
        await asyncio.sleep(0.2)
        assert conn.stray and not conn.is_fresh  # forward.py closes it instead of using it
        conn.close()


@run
async def test_a_close_mid_body_is_an_upstream_error(tmp_path: Path) -> None:
    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhalf")
        await w.drain()
        await asyncio.sleep(0.05)
        w.close()

    async with instance(tmp_path, script) as connect:
        conn = await connect()
        with pytest.raises(UpstreamError):
            await exchange(conn, b"/")
        assert not conn.recycle()


@run
async def test_a_close_before_the_head_is_an_upstream_error(tmp_path: Path) -> None:
    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.close()

    async with instance(tmp_path, script) as connect:
        conn = await connect()
        with pytest.raises(UpstreamError) as caught:
            await exchange(conn, b"/")
        assert caught.value.sent and not conn.recycle()


@run
async def test_a_never_ending_head_or_body_times_out_at_the_deadline(tmp_path: Path) -> None:
    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        target = await read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\n")
        if target == b"/body":
            w.write(b"Content-Length: 10\r\n\r\nab")
        for _ in range(100):
            await asyncio.sleep(0.02)
            w.write(b"X-A: b\r\n" if target == b"/head" else b"")

    async with instance(tmp_path, script) as connect:
        for target in (b"/head", b"/body"):
            conn = await connect()
            with pytest.raises(TimeoutError):
                await exchange(conn, target, deadline=0.3)
            assert not conn.recycle()
            conn.close()


@run
async def test_a_large_body_streams_with_reading_paused_not_buffered(tmp_path: Path) -> None:
    size = 4 * MAX_BUFFER

    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        for _ in range(size // 65536):
            w.write(b"x" * 65536)
            await w.drain()
        await r.read()

    async with instance(tmp_path, script) as connect:
        conn = await connect()
        loop = asyncio.get_running_loop()
        await conn.request(payload(b"/"), head_only=False, deadline=loop.time() + 10)
        got = 0
        while True:
            await asyncio.sleep(0.01)  # a slow consumer
            assert conn.reader.buffered <= MAX_BUFFER + 256 * 1024
            chunk = await conn.next_chunk()
            if chunk is None:
                break
            got += len(chunk)
        assert got == size and conn.recycle()
        conn.close()


@run
async def test_a_body_that_ended_in_the_read_that_paused_leaves_the_connection_reading(
    tmp_path: Path
) -> None:
    """The read that passed MAX_BUFFER also completed the response: the connection went
    back to the idle list with reading paused, and its next request waited for an answer
    it could not read until the deadline (504)."""
    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        body = b"x" * (MAX_BUFFER + 1)  # buffered passes the limit with the last byte only
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await read_request(r)
        w.write(OK)
        await r.read()

    async with instance(tmp_path, script) as connect:
        conn = await connect()
        loop = asyncio.get_running_loop()
        await conn.request(payload(b"/big"), head_only=False, deadline=loop.time() + 10)
        while not conn.reader.complete:
            await asyncio.sleep(0.01)  # a consumer that reads only once all has arrived
        got = 0
        while (chunk := await conn.next_chunk()) is not None:
            got += len(chunk)
        assert got == MAX_BUFFER + 1 and conn.recycle()
        assert await exchange(conn, b"/next", deadline=2.0) == (200, b"hi")
        conn.close()


@run
async def test_a_kept_alive_connection_arms_one_timer_and_each_request_its_own_deadline(
        tmp_path: Path) -> None:
    """The connection's one timer: a request after a quick one arms nothing new, yet times
    out at its own deadline (not the first request's, nor never); an earlier deadline than
    the armed one is honoured; a closed connection leaves no timer behind."""
    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            target = await read_request(r)
            if target != b"/hang":
                w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    loop = asyncio.get_running_loop()
    async with instance(tmp_path, script) as connect:
        conn = await connect()
        assert await exchange(conn, b"/a", deadline=0.2) == (200, b"ok")
        assert conn.recycle()
        armed: list[float] = []
        call_at = loop.call_at

        def counting(when: float, callback: Any, *args: Any, **kwargs: Any) -> Any:
            armed.append(when)
            return call_at(when, callback, *args, **kwargs)

        loop.call_at = counting  # type: ignore[method-assign,assignment]
        try:
            for _ in range(20):  # later deadlines: no new timer, the armed one serves
                assert await exchange(conn, b"/a", deadline=5.0) == (200, b"ok")
                assert conn.recycle()
        finally:
            del loop.call_at
        assert armed == []
        started = loop.time()
        with pytest.raises(TimeoutError):  # past the first request's 0.2 s, at its own 0.6 s
            await exchange(conn, b"/hang", deadline=0.6)
        assert 0.55 <= loop.time() - started < 2.0
        conn.close()

        conn = await connect()
        assert await exchange(conn, b"/a", deadline=30.0) == (200, b"ok")
        assert conn.recycle()
        started = loop.time()
        with pytest.raises(TimeoutError):  # earlier than the armed 30 s
            await exchange(conn, b"/hang", deadline=0.2)
        assert loop.time() - started < 2.0
        conn.close()
        assert conn._timer is None  # closed: nothing left armed for it


def test_the_runtimes_workers_figure_is_digits_and_at_least_one() -> None:
    assert parse_workers(b"2") == 2
    assert parse_workers(b" 7 ") == 7
    assert parse_workers(b"0") == 1
    for bad in (b"", b"-1", b"2.5", b"1e3", b"\xd9\xa3", b"12345678901", b"2, 3"):
        assert parse_workers(bad) is None, bad


def test_only_the_runtimes_first_headers_are_its_word() -> None:
    rest = [(b"content-type", b"text/plain")]
    assert runtime_control([(b"lambda-workers", b"2"), *rest]) == (2, False, rest)
    assert runtime_control([(b"lambda-workers", b"2"), (b"lambda-wait-timeout", b"4900"),
                            *rest]) == (2, True, rest)
    # Not first: a function's, never the runtime's (and the gateway drops it).
    later = [*rest, (b"lambda-workers", b"1"), (b"lambda-wait-timeout", b"1")]
    assert runtime_control(later) == (None, False, later)
    alone = [(b"lambda-wait-timeout", b"1"), *rest]
    assert runtime_control(alone) == (None, False, alone)
    assert runtime_control([]) == (None, False, [])
