"""This node's two connections to the cluster's database, beside the store's.

`listen` only LISTENs (a running `notifies()` holds its connection); `session` carries
heartbeats and advisory locks (leadership), so a node whose session is gone is silent
and leads nothing. Either lost: both are closed, `on_lost` runs (leadership off), and
they are opened again with backoff (0.2 s doubling to 2 s); once both are back and
listening, `on_connected` runs (a full reload: what was announced meanwhile is read).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from lambdad.store.database import connect_params, redacted, scrub

log = logging.getLogger("lambdad.cluster")

FIRST_BACKOFF = 0.2
MAX_BACKOFF = 2.0
# Test fault: LAMBDAD_FAULT=session-reconnect-delay holds each reconnect this long, so a
# test can change something while this node is not listening.
FAULT_DELAY = 3.0


def reconnect_delay() -> float:
    return FAULT_DELAY if os.environ.get("LAMBDAD_FAULT") == "session-reconnect-delay" else 0.0


class Session:
    def __init__(
        self, url: str, node_id: str, *, channels: Sequence[str],
        on_notify: Callable[[str, str], None],
        on_connected: Callable[[Any, bool], Awaitable[None]],
        on_lost: Callable[[], None],
    ) -> None:
        self.url = url
        self.node_id = node_id
        self.channels = tuple(channels)
        self._on_notify = on_notify
        self._on_connected = on_connected
        self._on_lost = on_lost
        self.conn: Any = None  # the session connection while connected
        self.connected = asyncio.Event()
        self.connects = 0
        self._broken = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_error = ""

    async def start(self, timeout: float) -> None:
        """Connects (and runs the first `on_connected`) before returning; the loop then
        keeps it connected. Fails after `timeout` seconds with why."""
        self._task = asyncio.create_task(self._run(), name="cluster-session")
        try:
            await asyncio.wait_for(self.connected.wait(), timeout)
        except TimeoutError:
            await self.stop()
            raise ConnectionError(
                f"cannot open the cluster session to {redacted(self.url)}: "
                f"{self._last_error or 'timed out'}") from None

    def broken(self, reason: str) -> None:
        """A user of `conn` saw it fail: reconnect."""
        if self.connected.is_set():
            log.warning("cluster: session lost: %s", reason)
        self._broken.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _connect(self, role: str) -> Any:
        import psycopg

        return await psycopg.AsyncConnection.connect(
            self.url, autocommit=True,
            **connect_params(self.url, f"lambdad:{self.node_id}:{role}"))

    async def _run(self) -> None:
        import psycopg

        backoff = FIRST_BACKOFF
        first = True
        while True:
            listen = session = None
            try:
                listen = await self._connect("listen")
                session = await self._connect("session")
                for channel in self.channels:
                    await listen.execute(f'LISTEN "{channel}"')
                self.conn = session
                self._broken.clear()
                await self._on_connected(session, first)
                self.connects += 1
                first = False
                backoff = FIRST_BACKOFF
                self.connected.set()
                if self.connects > 1:
                    log.info("cluster: session to %s is back", redacted(self.url))
                reason = await self._serve(listen)
                log.warning("cluster: session lost: %s; reconnecting", reason)
            except (psycopg.Error, OSError) as exc:
                self._last_error = scrub(str(exc).strip().replace("\n", " "), self.url)
                log.warning("cluster: cannot reach %s: %s; retrying in %.1f s",
                            redacted(self.url), self._last_error, backoff)
            except Exception:  # a bug in a callback must not end the reconnect loop
                log.exception("cluster: the session failed")
            finally:
                was = self.connected.is_set()
                self.connected.clear()
                self.conn = None
                for conn in (listen, session):
                    if conn is not None:
                        with contextlib.suppress(Exception):
                            await conn.close()
                if was or not first:
                    self._on_lost()
            await asyncio.sleep(backoff + (reconnect_delay() if not first else 0.0))
            backoff = min(MAX_BACKOFF, backoff * 2)

    async def _serve(self, listen: Any) -> str:
        """Hands every notification to `on_notify` until the listen connection fails or
        a user of the session connection reports it broken; returns why it ended."""
        import psycopg

        async def pump() -> str:
            try:
                async for notify in listen.notifies():
                    self._on_notify(notify.channel, notify.payload)
            except psycopg.Error as exc:
                return scrub(str(exc).strip().replace("\n", " "), self.url) or "closed"
            return "listen connection closed"

        pumping = asyncio.create_task(pump())
        broken = asyncio.create_task(self._broken.wait())
        try:
            done, _ = await asyncio.wait({pumping, broken},
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pumping, broken):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        return pumping.result() if pumping in done else "session connection failed"
