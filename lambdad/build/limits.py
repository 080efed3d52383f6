"""What one build may use (pip and `docker build` together), and how much of its output
a deployer sees."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

MIB = 1024 * 1024


@dataclass(frozen=True)
class BuildLimits:
    """What one build may use: pip and `docker build` together."""

    timeout_s: float = 600.0
    memory_bytes: int = 2048 * MIB
    cpu_shares: int = 512  # half a container's default weight: builds yield to instances
    file_bytes: int = 2048 * MIB  # the largest file pip may write (a wheel, an .so)
    output_lines: int = 2000  # lines of pip or build output shown; the rest is counted
    line_chars: int = 1000
    user: int = 65534  # uid (and gid) pip runs as when lambdad is root
    max_image_bytes: int = 4096 * MIB  # the largest image a build may leave
    min_free_disk_bytes: int = 1024 * MIB  # a build stops below this on Docker's data root,
    # and pip below this on its work folder's and the build folder's file systems


class OutputCap:
    """Passes on the first `lines` lines (each cut to `chars`), then one note; keeps a
    tail for error messages whatever was dropped."""

    def __init__(self, emit: Callable[[str], None], lines: int, chars: int,
                 tail: int = 15, skip: tuple[str, ...] = ()) -> None:
        self._emit = emit
        self._skip = skip
        self._left = lines
        self._chars = chars
        self.dropped = 0
        self.tail: deque[str] = deque(maxlen=tail)

    def line(self, text: str) -> None:
        text = text.rstrip()
        if not text or any(noise in text for noise in self._skip):
            return
        if len(text) > self._chars:
            text = text[: self._chars] + " …"
        self.tail.append(text)
        if self._left > 0:
            self._left -= 1
            self._emit(text)
            if self._left == 0:
                self._emit("(further output is not shown)")
        else:
            self.dropped += 1
