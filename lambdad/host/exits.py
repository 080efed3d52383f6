"""Docker's die events, followed on a thread of their own and handed to the loop."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable


class ExitWatcher:
    """Runs `watch(on_exit)` (blocking: the backend's event stream) on a daemon thread, so
    should the stream not close when asked it cannot keep the process from exiting; each
    exited container id reaches `exited` on the event loop."""

    name = "docker event watcher"

    def __init__(self, watch: Callable[[Callable[[str], None]], None],
                 stop_watching: Callable[[], None], exited: Callable[[str], None]) -> None:
        self._watch = watch
        self._stop_watching = stop_watching
        self._exited = exited
        self._thread: threading.Thread | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()

        def on_exit(container_id: str) -> None:  # called on the watcher thread
            with contextlib.suppress(RuntimeError):  # the loop closed: we are exiting
                loop.call_soon_threadsafe(self._exited, container_id)

        self._thread = threading.Thread(target=self._watch, args=(on_exit,),
                                        name="docker-events", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        self._stop_watching()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5)
            self._thread = None
