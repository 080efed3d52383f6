"""Start-up: the supervisor, the function loaded (or not yet, as a stem cell), the socket.

This process is the supervisor (supervisor.py): it never imports the function's code. It
serves HTTP/1.1 on the Unix socket named by $LAMBDA_SOCKET (http1.py), and runs each request
on a worker process.

Two ways to start:
- a stem cell (LAMBDA_STEM_CELL=1): the socket appears at once, before any function code
  runs; the first request, POST /init {handler, task_root, env}, loads the function;
- otherwise the handler named by _HANDLER is loaded first, and the socket appears only once
  it loaded (an import error exits 1 before there is a socket).

SIGTERM or SIGINT stops it gracefully (Supervisor.shutdown): the socket goes first, then the
function's workers get their SIGTERM and a short grace.
"""

from __future__ import annotations

import os
import signal
import socket
import time

from .supervisor import SHUTDOWN_GRACE_S, Supervisor

DEFAULT_SOCKET = "/run/lambda/invoke.sock"
DEFAULT_TASK_ROOT = "/var/task"
LISTEN_BACKLOG = 1024  # a burst of connects to a new instance must queue, not fail


def _remove(path: str) -> None:
    """Unlinks `path` if it can (contextlib.suppress would cost an import at start)."""
    try:  # noqa: SIM105
        os.unlink(path)
    except OSError:
        pass


def listen(path: str) -> socket.socket:
    """A listening socket at `path` that appears only once it accepts connections.

    The daemon connects as soon as the path exists; bound under a temporary name, made
    0666, listening, and then renamed (over a stale socket of a previous run, if any), the
    socket is never seen half ready.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    temp = os.path.join(os.path.dirname(path), f".{os.getpid()}.sock")
    _remove(temp)
    try:
        try:
            sock.bind(temp)
        except OSError:  # e.g. a path too long for AF_UNIX: bind in place instead
            temp = path
            _remove(path)
            sock.bind(path)
        try:
            os.chmod(temp, 0o666)  # the daemon's user differs from the container's 10001
            # A Unix-socket connect to a full backlog fails instead of waiting.
            sock.listen(LISTEN_BACKLOG)
            if temp != path:
                os.rename(temp, path)
        except BaseException:
            _remove(temp)
            raise
    except BaseException:
        sock.close()
        raise
    return sock


def main(env: dict[str, str] | None = None) -> int:
    started = time.monotonic()
    env = dict(os.environ) if env is None else env
    task_root = env.get("LAMBDA_TASK_ROOT", DEFAULT_TASK_ROOT)
    socket_path = env.get("LAMBDA_SOCKET", DEFAULT_SOCKET)
    stem_cell = env.get("LAMBDA_STEM_CELL") == "1"
    supervisor = Supervisor(env)  # forks the zygote first of all
    # SIGTERM (docker stop) or SIGINT: the loop ends after the event it is handling, then
    # the function's processes get their graceful stop.
    signal.signal(signal.SIGTERM, supervisor.terminate)
    signal.signal(signal.SIGINT, supervisor.terminate)
    listener: socket.socket | None = None
    try:
        if not stem_cell:
            result = supervisor.load(env.get("_HANDLER", ""), task_root, {}, started)
            if not result["ok"] and not supervisor.terminating:
                return supervisor.fatal_code or 1
        if not supervisor.terminating:
            listener = listen(socket_path)
            supervisor.serve(listener, socket_path)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second signal must not abort cleanup
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if listener is not None:  # nothing new comes in while the workers stop
            listener.close()
            _remove(socket_path)
        supervisor.shutdown(SHUTDOWN_GRACE_S)
        supervisor.close_logs()
    return supervisor.fatal_code or 0
