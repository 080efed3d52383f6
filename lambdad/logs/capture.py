"""Reads each instance's stdout and stderr from Docker while it runs, into the LogStore.

One asyncio task per instance follows Docker's log stream (from the container's start,
so nothing printed during start-up is missed) over the engine's Unix socket, and hands
parsed lines to the store; the task ends when the container stops. `follow_channel` reads a
standard-runtime instance's log channel instead (channel_stream.py); nothing calls it yet.
"""

from __future__ import annotations

import asyncio
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
                 socket_path: str | None = None) -> None:
        self._api_version = api_version
        self._sink = sink
        self._socket = socket_path or docker_socket()
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

    def follow_channel(self, source: Source, folder: InstanceFolder) -> None:
        """Starts reading a standard-runtime instance's log channel instead of Docker's
        stream (its runtime started with LAMBDA_LOG_CHANNEL=1). Not called yet:
        docs/design-notes/log-channel.md says what switches it on."""
        decoder = RecordDecoder(source.function, source.version, source.instance)
        self._track(asyncio.create_task(
            channel_stream.follow(folder, decoder, self._sink), name=f"logs-{source.instance}"))

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
