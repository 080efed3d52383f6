"""Reads each instance's stdout and stderr from Docker while it runs, into the LogStore.

One thread per stream and instance follows Docker's log stream (from the container's
start, so nothing printed during start-up is missed) and hands parsed lines to the
event loop; the thread ends when the container stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import docker
import docker.errors

from lambdad.logs.entry import LogEntry, parse_docker_line, parse_line

log = logging.getLogger("lambdad.logs")

MAX_LINE_BYTES = 64 * 1024  # longer lines are cut: a function printing one huge line


@dataclass(frozen=True)
class Source:
    function: str
    version: int
    instance: str
    container_id: str


class LogCapture:
    def __init__(self, client: docker.DockerClient, sink: Callable[[LogEntry], None]) -> None:
        self._api = client.api
        self._sink = sink
        self._loop: asyncio.AbstractEventLoop | None = None

    def follow(self, source: Source, *, since: datetime | None = None) -> None:
        """Starts capturing; `since` skips lines already captured (an adopted instance)."""
        self._loop = asyncio.get_running_loop()
        for stream in ("stdout", "stderr"):
            threading.Thread(
                target=self._run, args=(source, stream, since),
                name=f"logs-{source.instance}-{stream}", daemon=True,
            ).start()

    def _run(self, source: Source, stream: str, since: datetime | None) -> None:
        try:
            chunks = self._api.logs(
                source.container_id, stdout=stream == "stdout", stderr=stream == "stderr",
                stream=True, follow=True, timestamps=True,
                since=since if since is not None else None,
            )
            partial = b""
            for chunk in chunks:
                partial += chunk
                *lines, partial = partial.split(b"\n")
                for raw in lines:
                    self._emit(source, stream, raw[:MAX_LINE_BYTES])
                if len(partial) > MAX_LINE_BYTES:
                    self._emit(source, stream, partial[:MAX_LINE_BYTES])
                    partial = b""
            if partial:
                self._emit(source, stream, partial)
        except docker.errors.NotFound:
            return  # removed before we attached: nothing left to read
        except Exception as exc:  # the stream breaks when the container is removed
            log.debug("log capture of %s/%s ended: %s", source.instance, stream, exc)

    def _emit(self, source: Source, stream: str, raw: bytes) -> None:
        when, text = parse_docker_line(raw)
        request_id, message = parse_line(text)
        entry = LogEntry(time=when, function=source.function, version=source.version,
                         instance=source.instance, stream=stream, request_id=request_id,
                         message=message)
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed as the daemon stopped
                loop.call_soon_threadsafe(self._sink, entry)
