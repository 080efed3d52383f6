"""The client connection's Protocol (lambdad/gateway/stream.py) with an in-memory transport:
reads by a deadline on one timer, back-pressure both ways, the client's EOF and hang-up."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from lambdad.gateway.stream import READ_SIZE, ClientStream, ReadTimeout


class Transport(asyncio.Transport):
    """Records what the stream asks of its transport."""

    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.paused = False
        self.eof = False
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("203.0.113.7", 4242) if name == "peername" else default

    def write(self, data: Any) -> None:
        self.written += bytes(data)

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


def run(test: Callable[[ClientStream, Transport, list[str]], Awaitable[None]]) -> None:
    async def main() -> None:
        events: list[str] = []
        stream = ClientStream(lambda s: events.append("connected"),
                              lambda: events.append("released"))
        stream.on_gone = lambda: events.append("gone")
        transport = Transport()
        stream.connection_made(transport)
        await test(stream, transport, events)

    asyncio.run(main())


def test_bytes_arriving_while_waiting_or_before_are_read_once() -> None:
    async def test(stream: ClientStream, transport: Transport, events: list[str]) -> None:
        assert events == ["connected"] and stream.peer == "203.0.113.7"
        stream.data_received(b"early")
        stream.data_received(b"+more")
        assert await stream.read(None) == b"early+more"
        loop = asyncio.get_running_loop()
        loop.call_later(0.01, stream.data_received, b"later")
        assert await stream.read(loop.time() + 5) == b"later"

    run(test)


def test_a_read_gives_up_at_its_deadline_and_the_timer_follows_deadlines() -> None:
    async def test(stream: ClientStream, transport: Transport, events: list[str]) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(ReadTimeout):
            await stream.read(started + 0.05)
        assert 0.04 <= loop.time() - started < 1.0
        # A later deadline keeps the armed timer; an earlier one moves it.
        waiting = asyncio.ensure_future(stream.read(loop.time() + 60))
        await asyncio.sleep(0)
        first = stream._timer
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        later = asyncio.ensure_future(stream.read(loop.time() + 120))
        await asyncio.sleep(0)
        assert stream._timer is first  # not re-armed for a later deadline
        later.cancel()
        with pytest.raises(asyncio.CancelledError):
            await later
        started = loop.time()
        with pytest.raises(ReadTimeout):
            await stream.read(started + 0.05)  # earlier than the armed one: moved
        assert loop.time() - started < 1.0
        with pytest.raises(ReadTimeout):
            await stream.read(loop.time() - 1)  # already past: no wait at all

    run(test)


def test_an_armed_timer_that_fires_early_re_arms_for_the_waiting_reads_deadline() -> None:
    async def test(stream: ClientStream, transport: Transport, events: list[str]) -> None:
        loop = asyncio.get_running_loop()
        short = asyncio.ensure_future(stream.read(loop.time() + 0.03))
        await asyncio.sleep(0)
        short.cancel()
        with pytest.raises(asyncio.CancelledError):
            await short
        started = loop.time()
        longer = asyncio.ensure_future(stream.read(started + 0.15))
        await asyncio.sleep(0.08)  # the timer armed for 0.03 has fired and re-armed
        assert not longer.done()
        stream.data_received(b"x")
        assert await longer == b"x"
        with pytest.raises(ReadTimeout):
            await stream.read(loop.time() + 0.05)
        assert loop.time() - started >= 0.1

    run(test)


def test_a_full_buffer_pauses_reading_until_it_is_read() -> None:
    async def test(stream: ClientStream, transport: Transport, events: list[str]) -> None:
        stream.data_received(b"x" * (READ_SIZE - 1))
        assert not transport.paused
        stream.data_received(b"yy")
        assert transport.paused
        assert len(await stream.read(None)) == READ_SIZE + 1
        assert not transport.paused

    run(test)


def test_eof_wakes_a_read_with_the_end_and_reports_the_client_gone() -> None:
    async def test(stream: ClientStream, transport: Transport, events: list[str]) -> None:
        loop = asyncio.get_running_loop()
        stream.data_received(b"last")
        assert stream.eof_received() is True  # our side stays open for the answer
        assert events[-1] == "gone"
        assert await stream.read(loop.time() + 5) == b"last"
        assert await stream.read(loop.time() + 5) == b""
        await stream.write(b"answer")
        stream.write_eof()
        assert transport.written == b"answer" and transport.eof

    run(test)


def test_writes_wait_while_the_client_is_slow_and_fail_once_it_is_gone() -> None:
    async def test(stream: ClientStream, transport: Transport, events: list[str]) -> None:
        stream.pause_writing()
        write = asyncio.ensure_future(stream.write(b"a"))
        await asyncio.sleep(0.01)
        assert not write.done() and transport.written == b"a"
        stream.resume_writing()
        await write
        stream.pause_writing()
        write = asyncio.ensure_future(stream.write(b"b"))
        await asyncio.sleep(0)
        stream.connection_lost(None)
        with pytest.raises(ConnectionResetError):
            await write
        with pytest.raises(ConnectionResetError):
            await stream.write(b"c")
        assert events == ["connected", "released", "gone"]
        assert await stream.read(None) == b""  # a read after the loss ends at once

    run(test)


def test_a_read_without_a_deadline_outlives_a_timer_armed_for_an_earlier_one() -> None:
    async def test(stream: ClientStream, transport: Transport, events: list[str]) -> None:
        loop = asyncio.get_running_loop()
        armed = asyncio.ensure_future(stream.read(loop.time() + 0.02))
        await asyncio.sleep(0)
        armed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await armed
        patient = asyncio.ensure_future(stream.read(None))
        await asyncio.sleep(0.06)  # the timer fired meanwhile
        assert not patient.done()
        stream.data_received(b"late")
        assert await patient == b"late"

    run(test)


async def _over_a_socketpair(send_timeout: float) -> tuple[ClientStream, list[str], Any]:
    """A stream on a real (Unix) socket whose peer never reads."""
    ours, theirs = socket.socketpair()
    events: list[str] = []
    loop = asyncio.get_running_loop()
    _, stream = await loop.connect_accepted_socket(
        lambda: ClientStream(lambda s: None, lambda: events.append("released"), send_timeout),
        ours)
    return stream, events, theirs


def test_a_client_that_takes_nothing_of_a_write_is_cut_after_the_send_timeout() -> None:
    """Attack: a caller that never reads its answer. `drain()` (and this write) waited
    for ever, keeping the connection and its place under the cap."""
    async def main() -> None:
        stream, events, theirs = await _over_a_socketpair(0.3)
        with theirs:
            with pytest.raises(ConnectionResetError):
                async with asyncio.timeout(5):
                    await stream.write(b"x" * (8 << 20))
            await asyncio.sleep(0)
            assert events == ["released"]
    asyncio.run(main())


def test_a_close_whose_bytes_the_client_never_takes_ends_after_the_send_timeout() -> None:
    """The last bytes of an answer left in the transport (under the pause mark, so no
    write waited) kept a closed connection open for ever: `close()` waits for them."""
    async def main() -> None:
        stream, events, theirs = await _over_a_socketpair(0.3)
        with theirs:
            assert stream.transport is not None
            stream.transport.write(b"x" * (8 << 20))  # more than the socket buffers hold
            stream.close()
            async with asyncio.timeout(5):
                while not events:
                    await asyncio.sleep(0.05)
            assert events == ["released"]
    asyncio.run(main())
