"""NO_COLOR (https://no-color.org): the real CLI on a pseudo-terminal, with and without it."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# SGR sequences that set a foreground or background colour (16, 256 or true colour).
COLOUR_SGR = re.compile(rb"\x1b\[(?:[0-9;]*;)?(?:3[0-9]|4[0-9]|9[0-7]|10[0-7])(?:;[0-9;]*)?m")


def run_on_a_terminal(*argv: str, **extra_env: str) -> tuple[int, bytes]:
    """Run lambdactl with stdin, stdout and stderr on a new pseudo-terminal."""
    env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "TERM": "xterm-256color",
           "LAMBDA_HOST": "unix:///tmp/lambdactl-no-such-daemon.sock", **extra_env}
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "lambdactl", *argv], stdin=slave,
                                stdout=slave, stderr=slave, env=env, cwd=ROOT)
    finally:
        os.close(slave)
    output = b""
    try:
        while chunk := os.read(master, 4096):
            output += chunk
    except OSError:  # EIO once the child has closed the terminal
        pass
    finally:
        os.close(master)
    return proc.wait(timeout=30), output


def test_error_line_is_coloured_on_a_terminal() -> None:
    code, output = run_on_a_terminal("list")
    assert code == 69
    assert COLOUR_SGR.search(output), output
    assert b"lambdad is not running" in output


def test_no_color_removes_every_colour() -> None:
    code, output = run_on_a_terminal("list", NO_COLOR="1")
    assert code == 69
    assert not COLOUR_SGR.search(output), output
    assert b"error:" in output and b"lambdad is not running" in output


def test_colour_pattern_matches_only_colours() -> None:
    assert COLOUR_SGR.search(b"\x1b[1;31merror:\x1b[0m")
    assert COLOUR_SGR.search(b"\x1b[38;5;9mx")
    assert not COLOUR_SGR.search(b"\x1b[1merror:\x1b[0m")  # bold is not a colour
