"""Reading a function's captured logs through the real CLI (`lambdactl logs -o json`),
and waiting for lines that are written after the answer (the log channel delivers them
a moment later)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from tests.support.daemon import Lambdad

Entry = dict[str, object]


def function_logs(daemon: Lambdad, name: str, *args: str) -> list[Entry]:
    """`lambdactl logs NAME -o json ARGS...`, one entry a line; the CLI must succeed."""
    result = daemon.cli("logs", name, "-o", "json", *args)
    assert result.code == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def wait_logs(daemon: Lambdad, name: str, predicate: Callable[[list[Entry]], object],
              *args: str, timeout: float = 20) -> list[Entry]:
    """The logs once `predicate` holds for them, or as they are after `timeout` seconds:
    the caller asserts on what came, so a miss shows what did arrive."""
    deadline = time.monotonic() + timeout
    while True:
        entries = function_logs(daemon, name, *args)
        if predicate(entries) or time.monotonic() > deadline:
            return entries
        time.sleep(0.2)


def reported(request_id: str) -> Callable[[list[Entry]], bool]:
    """A predicate: the request's REPORT line (its last) is in the logs."""
    return lambda entries: any(
        e["request_id"] == request_id and e["stream"] == "runtime"
        and str(e["message"]).startswith("REPORT ") for e in entries)


def request_logs(daemon: Lambdad, name: str, request_id: str,
                 until: Callable[[list[Entry]], object] | None = None, *,
                 timeout: float = 20) -> list[Entry]:
    """One request's entries (`--request-id`) once its REPORT is in, and what `until`
    asks for (lines of other streams may come a moment apart); as they are at `timeout`."""
    done = reported(request_id)
    return wait_logs(daemon, name,
                     lambda found: done(found) and (until is None or bool(until(found))),
                     "--request-id", request_id, timeout=timeout)
