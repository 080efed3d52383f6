"""What lambdad needs from its host before and while it runs: the state folder, the
control socket, the pid file, keys and TLS files, the open-files limit, the Docker engine,
the listeners and the Docker event thread. Each module is small and raises StartupError
with a message that says what to do."""

from __future__ import annotations


class StartupError(Exception):
    """lambdad cannot start; the message says why and what to do."""
