"""Reads each instance's stdout and stderr from Docker while it runs, into the LogStore.

One asyncio task per instance follows Docker's log stream (from the container's start,
so nothing printed during start-up is missed) over the engine's Unix socket, and hands
parsed lines to the store; the task ends when the container stops. `follow_channel` reads a
standard-runtime instance's log channel instead (channel_stream.py): every instance lambdad
started with LAMBDA_LOG_CHANNEL=1 (labelled `lambda.logs=channel`); a runtime that does not
answer as the channel (an image from before it) is followed on Docker's stream after all.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from lambdad.logs import channel_stream, docker_stream
from lambdad.logs.channel import RecordDecoder
from lambdad.logs.entry import RUNTIME_STREAM, LogEntry, parse_docker_line, parse_line
from lambdad.runtime.folder import InstanceFolder

log = logging.getLogger("lambdad.logs")


@dataclass(frozen=True)
class Source:
    function: str
    version: int
    instance: str
    container_id: str
    framed: bool = True  # the standard runtime frames its lines; a Dockerfile function not


def docker_socket() -> str:
    host = os.environ.get("DOCKER_HOST", "")
    if host.startswith("unix://"):
        return host[len("unix://"):]
    return "/var/run/docker.sock"


class LogCapture:
    def __init__(self, api_version: str, sink: Callable[[LogEntry], None], *,
                 socket_path: str | None = None,
                 congested: Callable[[str], bool] | None = None,
                 on_dropped: Callable[[str, int, int], None] | None = None,
                 encoded: channel_stream.EncodedSink | None = None) -> None:
        """`congested(function)` says when the store's buffer is full for that function's
        lines (its channels pause reading);
        `on_dropped(function, lines, bytes)` is told what a runtime's queue dropped;
        `encoded` (the LogStore), when given, takes log channels' lines already encoded."""
        self._api_version = api_version
        self._sink = sink
        self._encoded = encoded
        self._socket = socket_path or docker_socket()
        self._congested = congested
        self._on_dropped = on_dropped
        self._tasks: set[asyncio.Task[Any]] = set()

    def follow(self, source: Source, *, since: datetime | None = None) -> None:
        """Starts capturing; `since` skips lines already captured (an adopted instance)."""

        def on_line(stream: str, raw: bytes) -> None:
            when, text = parse_docker_line(raw)
            request_id, message, frame = parse_line(text, framed=source.framed)
            self._sink(LogEntry(time=when, function=source.function, version=source.version,
                                instance=source.instance,
                                stream=RUNTIME_STREAM if frame else stream,
                                request_id=request_id, message=message))

        self._track(asyncio.create_task(
            docker_stream.follow(self._socket, self._api_version, source.container_id, since,
                                 on_line),
            name=f"logs-{source.instance}",
        ))

    def follow_channel(self, source: Source, folder: InstanceFolder, *,
                       since: datetime | None = None) -> None:
        """Starts reading a standard-runtime instance's log channel instead of Docker's
        stream (its runtime started with LAMBDA_LOG_CHANNEL=1), once its socket answers.
        What it wrote before, or while no lambdad read, its runtime kept (within its caps).
        When the channel cannot be opened or the runtime does not answer as the channel,
        Docker's stream is followed from `since` instead, so no runtime loses its logs."""
        on_dropped = None
        if self._on_dropped is not None:
            on_dropped = functools.partial(self._on_dropped, source.function)
        decoder = RecordDecoder(source.function, source.version, source.instance,
                                on_dropped=on_dropped)
        self._track(asyncio.create_task(self._channel(source, folder, decoder, since),
                                        name=f"logs-{source.instance}"))

    async def _channel(self, source: Source, folder: InstanceFolder, decoder: RecordDecoder,
                       since: datetime | None) -> None:
        congested = None
        if self._congested is not None:
            congested = functools.partial(self._congested, source.function)
        protocol = await channel_stream.follow(folder, decoder, self._sink,
                                               congested=congested, encoded=self._encoded)
        if protocol is None or not decoder.head_done:
            log.info("log channel not answered instance=%s: following Docker's stream",
                     source.instance)
            self.follow(source, since=since)

    def _track(self, task: asyncio.Task[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self, grace: float = 2.0) -> None:
        """Stops capturing. lambdad calls it after removing every instance, so each stream
        is ending on its own with the last lines (an instance's SIGTERM handler writes
        some as it stops); streams still open after `grace` seconds are cut."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
