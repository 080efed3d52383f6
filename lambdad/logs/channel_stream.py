"""Follows a standard-runtime instance's log channel on the event loop.

The counterpart of docker_stream.follow for instances whose runtime was started with
LAMBDA_LOG_CHANNEL=1: one connection per instance, opened like every connection to an
instance (`InstanceFolder.connect`: no link followed, the socket checked), the log request
sent, the records decoded by `RecordDecoder` (channel.py), entries handed to the sink. An
asyncio Protocol, not streams: no reader task wakes per chunk, and reading can pause.

A `ReadBudget` bounds what one instance costs the daemon: past its rate, reading pauses,
the runtime's queue fills and the runtime drops and counts what its function wrote on top
(docs/design-notes/log-channel.md, "Back-pressure and floods"). Reading pauses too while the
LogStore's write buffer is congested (`congested`): the runtime's queue then holds or drops
the lines, counted, instead of lambdad's memory.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from lambdad.logs.channel import REQUEST, ChannelBroken, RecordDecoder
from lambdad.logs.entry import LogEntry
from lambdad.runtime.folder import InstanceFolder, Refused

log = logging.getLogger("lambdad.logs")

RATE_BYTES_S = 8 << 20  # per instance; a function printing without pause gets this much
BURST_BYTES = 16 << 20
CONGESTED_PAUSE_S = 0.05  # how often a paused channel looks again at the store's buffer
# After each read the channel rests this long, so a busy instance's records arrive many to a
# read (one wake-up of the loop per batch, not per request); the runtime queues meanwhile,
# and the store writes every 0.2 s anyway.
BATCH_S = 0.02
# One turn of the loop files at most this many entries of one instance (well under a
# millisecond: a 20 ms batch of a busy instance, ~200 lines, filed at once held the loop for
# 2-3 ms and was the one-connection p99), and each line costs the budget LINE_COST bytes on
# top of its own: a flood of empty lines is bounded by lines, not only by bytes (8 MiB/s is
# 32,000 lines/s).
STEP_ENTRIES = 64
LINE_COST = 256


class EncodedSink(Protocol):
    """Where a channel files its lines already encoded (the LogStore): entries as objects
    only for a function someone follows."""

    def follows(self, function: str) -> bool: ...

    def append_encoded(self, function: str, lines: list[bytes], sizes: list[int],
                       entries: list[LogEntry] | None = None) -> None: ...


class ReadBudget:
    """A token bucket over bytes read (pure): how long to pause after reading `size`."""

    def __init__(self, rate: float = RATE_BYTES_S, burst: float = BURST_BYTES) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.last: float | None = None

    def spend(self, size: int, now: float) -> float:
        if self.last is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        self.tokens -= size
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


class ChannelProtocol(asyncio.Protocol):
    """One instance's channel: sends the log request, decodes what comes back."""

    def __init__(self, decoder: RecordDecoder, sink: Callable[[LogEntry], None],
                 budget: ReadBudget, congested: Callable[[], bool] | None = None,
                 encoded: EncodedSink | None = None) -> None:
        self.decoder = decoder
        self.sink = sink
        self.encoded = encoded  # when set, lines go there encoded, not to `sink`
        self.budget = budget
        self.congested = congested
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.broken: ChannelBroken | None = None
        self.paused_s = 0.0  # for the budget or a congested store, in total (tests)
        self.batch_s = BATCH_S
        self._owed = 0  # bytes read and not yet billed to the budget
        self._lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(REQUEST)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        try:
            self.decoder.push(data)
        except ChannelBroken as exc:
            self._refuse(exc)
            return
        self._owed += len(data)
        self.transport.pause_reading()
        self._step()

    def _refuse(self, exc: ChannelBroken) -> None:
        assert self.transport is not None
        self.broken = exc
        log.warning('log channel refused instance=%s reason="%s"', self.decoder.instance, exc)
        self.transport.close()

    def _step(self) -> None:
        """Files at most STEP_ENTRIES entries, then yields the loop: a read of tiny lines
        (a quarter MiB of them is 100,000 entries) is decoded over many turns of the loop,
        each line billed LINE_COST bytes on top of its own."""
        assert self.transport is not None
        if self.broken is not None:
            return
        try:
            if self.encoded is not None:
                function = self.decoder.function
                wanted: list[LogEntry] | None = [] if self.encoded.follows(function) else None
                lines, sizes = self.decoder.take_encoded(STEP_ENTRIES, wanted)
                self.encoded.append_encoded(function, lines, sizes, wanted)
                count = len(lines)
            else:
                entries = self.decoder.take(STEP_ENTRIES)
                for entry in entries:
                    self.sink(entry)
                count = len(entries)
        except ChannelBroken as exc:
            self._refuse(exc)
            self._finish()
            return
        pause = self.budget.spend(self._owed + count * LINE_COST, time.monotonic())
        self._owed = 0
        if pause > 0:
            self.paused_s += pause
        loop = asyncio.get_running_loop()
        if self.decoder.pending:
            loop.call_later(pause, self._step)
            return
        if self._lost:
            self._finish()
            return
        if pause <= 0 and self.congested is not None and self.congested():
            pause = CONGESTED_PAUSE_S
            self.paused_s += pause
        self._pause(max(pause, self.batch_s))

    def _pause(self, pause: float) -> None:
        assert self.transport is not None
        self.transport.pause_reading()
        asyncio.get_running_loop().call_later(pause, self._resume)

    def _resume(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if self.congested is not None and self.congested():
            self.paused_s += CONGESTED_PAUSE_S
            self._pause(CONGESTED_PAUSE_S)
            return
        self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if self.broken is not None or not self.decoder.pending:
            self._finish()
        # else: _step goes on with what was read and finishes after it

    def _finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def follow(folder: InstanceFolder, decoder: RecordDecoder,
                 sink: Callable[[LogEntry], None], budget: ReadBudget | None = None,
                 congested: Callable[[], bool] | None = None,
                 encoded: EncodedSink | None = None) -> ChannelProtocol | None:
    """Reads the instance's channel until it ends (the instance stopped, or the channel
    broke its format); None when the socket could not be reached. With `encoded`, lines
    are filed there as the store's bytes (no object a line unless followed), not to `sink`."""
    try:
        sock = await folder.connect()
    except (OSError, Refused) as exc:
        log.debug("log channel of %s not opened: %s", decoder.instance, exc)
        return None
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_unix_connection(
        lambda: ChannelProtocol(decoder, sink, budget or ReadBudget(), congested, encoded),
        sock=sock)
    try:
        await protocol.done
    finally:
        transport.close()
    return protocol
