"""Request ids: what a caller greps the logs for (`Lambda-Request-Id`).

The same shape as before, a random (version 4) UUID in its usual text form, with the same
122 bits from `os.urandom`; what changes is the cost. `str(uuid.uuid4())` builds a UUID
object (an int, its checks, its `__str__`) and makes a syscall per id; here the random
bytes come from one `os.urandom` call per 256 ids, already in hex, and an id is one
slice and one format. An id only has to be unique and not guessable from another one:
the bytes of two ids never overlap.
"""

from __future__ import annotations

import os

_IDS_PER_REFILL = 256
# The variant's two bits (RFC 9562: 10xx) over the random hex digit at that place.
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


class RequestIds:
    """A source of request ids; one per daemon (and one per test that wants its own).
    Not thread-safe: its callers (the gateway, the Invoke RPC) run on the event loop."""

    def __init__(self) -> None:
        self._hex = ""
        self._at = 0

    def __call__(self) -> str:
        at = self._at
        if at >= len(self._hex):
            self._hex = os.urandom(16 * _IDS_PER_REFILL).hex()
            at = 0
        h = self._hex[at:at + 32]
        self._at = at + 32
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


new_request_id = RequestIds()
