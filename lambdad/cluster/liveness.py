"""Who went silent, by heartbeat sequence, never by comparing clocks.

Each node bumps its `heartbeat_seq` every beat. An observer remembers, per node, the
sequence it last saw and when (its own monotonic clock) it saw it change; a node whose
sequence stayed the same for `down_after` seconds is silent. A node first seen, or an
observer that just (re)connected, starts a full window: a database restart, which
silences everybody at once, marks nobody down.
"""

from __future__ import annotations

from collections.abc import Mapping


class LivenessObserver:
    def __init__(self, down_after: float) -> None:
        self.down_after = down_after
        self._seen: dict[str, tuple[int, float]] = {}  # id -> (seq, when it last changed)

    def observe(self, now: float, seqs: Mapping[str, int]) -> list[tuple[str, int]]:
        """`seqs`: the nodes up now (not this one) and their sequence. Returns the
        silent ones as (id, the sequence seen), the sequence being what a conditional
        mark-down compares with."""
        for gone in [n for n in self._seen if n not in seqs]:
            del self._seen[gone]
        silent: list[tuple[str, int]] = []
        for node, seq in seqs.items():
            last = self._seen.get(node)
            if last is None or last[0] != seq:
                self._seen[node] = (seq, now)
            elif now - last[1] >= self.down_after:
                silent.append((node, seq))
        return silent

    def reset(self) -> None:
        """Forget every clock (after a reconnect: nobody's silence was observed)."""
        self._seen.clear()
