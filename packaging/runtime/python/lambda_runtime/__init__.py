"""Stdlib-only Python runtime that serves one Lambda-style handler over a Unix socket.

It has no third-party dependencies because the base image has no pip and builds have no network.
"""

__version__ = "0.1.0"
