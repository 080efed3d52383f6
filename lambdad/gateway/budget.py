"""The daemon-wide budget of request-body bytes the gateway holds in memory.

A body is read whole before it is handed to an instance; `max_body_size` bounds one
body, but nothing bounded them together: 300 anonymous connections each sending 6 MiB
less one byte and then stalling held 1.8 GiB for the body deadline (6 GiB at the
connection cap). Every body now takes its bytes from one budget before they are
read: a `Content-Length` body all at once, before the `100 Continue` or its first
byte, a chunked one as it grows. A body that does not fit is refused (503 with
Retry-After) instead of buffered, and its share comes back when it is handed over
or its connection ends, whichever way.

Large bodies may fill the budget only up to `limit - reserve`: the reserve (an eighth)
stays for small bodies (up to `SMALL_BODY`), so a flood of stalled uploads does not
lock out ordinary JSON requests. The total never passes `limit`.

Pure bookkeeping, no I/O: the gateway asks and tells, the tests count.
"""

from __future__ import annotations

from types import TracebackType

SMALL_BODY = 64 * 1024  # one read: a body this small is "an ordinary request"


def small_reserve(limit: int) -> int:
    """Bytes only small bodies may use: an eighth of the budget, one small body at least."""
    return min(limit, max(SMALL_BODY, limit // 8))


def largest_body(limit: int) -> int:
    """The largest body a budget of `limit` bytes can ever accept."""
    return max(limit - small_reserve(limit), min(limit, SMALL_BODY))


class BodyBudget:
    """Bytes of request bodies held now (`used`), at most (`peak`) and refused (`refused`)."""

    def __init__(self, limit: int) -> None:
        if limit <= 0:
            raise ValueError("the body budget must be positive")
        self.limit = limit
        self.reserve = small_reserve(limit)
        self.used = 0
        self.peak = 0  # the most ever held at once: what a test (or an operator) checks
        self.refused = 0  # bodies refused because the budget was spent

    def hold(self) -> Hold:
        """An empty share for one request; grow it with `cover`, end it with `release`."""
        return Hold(self)

    def _room(self, total: int) -> int:
        return self.limit if total <= SMALL_BODY else self.limit - self.reserve

    def _take(self, extra: int, total: int) -> bool:
        if self.used + extra > self._room(total):
            self.refused += 1
            return False
        self.used += extra
        self.peak = max(self.peak, self.used)
        return True

    def _give(self, amount: int) -> None:
        self.used -= amount
        assert self.used >= 0, "a share was given back twice"


class Hold:
    """One request body's share of the budget. `release` is idempotent, and the share
    is also a context manager, so every way out of a request (an answer, an error, a
    timeout, a cancelled task) gives it back exactly once."""

    def __init__(self, budget: BodyBudget) -> None:
        self._budget = budget
        self.held = 0

    def cover(self, total: int) -> bool:
        """Grows the share to `total` bytes; False (and no change) if the budget is spent."""
        extra = total - self.held
        if extra <= 0:
            return True
        if not self._budget._take(extra, total):
            return False
        self.held = total
        return True

    def release(self) -> None:
        held, self.held = self.held, 0
        if held:
            self._budget._give(held)

    def __enter__(self) -> Hold:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
