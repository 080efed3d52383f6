"""lambdad speaks systemd's notify protocol to a real notify socket."""

from __future__ import annotations

import contextlib
import signal
import socket
import tempfile
import time
from pathlib import Path

from tests.support.daemon import Lambdad


def test_ready_watchdog_status_and_stopping(fresh_lambdad: Lambdad) -> None:
    daemon = fresh_lambdad
    daemon.stop()
    folder = Path(tempfile.mkdtemp(prefix="ln-", dir="/tmp"))
    path = folder / "notify.sock"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(path))
    receiver.settimeout(0.2)
    messages: list[str] = []

    def collect(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                messages.append(receiver.recv(4096).decode())

    try:
        daemon.start_env = {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "2000000"}
        daemon.start()
        collect(2.5)
        assert any(m.startswith("READY=1") and "STATUS=" in m for m in messages), messages
        assert "WATCHDOG=1" in messages  # pinged every second (half the 2 s watchdog)
        assert daemon.stop(signal.SIGTERM) == 0
        collect(0.5)
        assert any(m.startswith("STOPPING=1") for m in messages), messages
    finally:
        daemon.start_env = {}
        receiver.close()
        path.unlink(missing_ok=True)
        folder.rmdir()
