"""The queue's times on a shared database are the database's clock, not a node's.

Nodes' wall clocks differ: an event stored by a node whose clock runs an hour ahead would
be "not due yet" for every other node for that hour (and max_event_age would compare
times written by different clocks). So on PostgreSQL the invocation table moves every
time on its way in by the database's clock less the node's (`offset`, read in a
transaction that writes, reused for a second while the node's clock is not set:
`Offset`) and back on its way out (events claimed, the next due time): what is stored
is in the database's clock, and the worker, the retry rule (model.next_step) and the
front door keep reckoning in their node's own clock, each consistently. On SQLite (one
daemon, one clock) nothing moves.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from lambdad.queue.model import AsyncInvocation, Finish


def offset(before: float, database: float, after: float) -> float:
    """The database's clock less this node's: `database` read between the node's readings
    `before` and `after` (the midpoint halves the round trip's error)."""
    return database - (before + after) / 2


# How far a new reading of the offset may differ from the one in use before it replaces
# it: readings jitter by the round trip, and a table whose offset moved by microseconds
# between two transactions would reorder events a node accepted one after the other.
STEADY_S = 0.01


def settled(previous: float | None, measured: float, within: float = STEADY_S) -> float:
    """The offset to use: `previous` while `measured` stays within `within` of it (jitter),
    else `measured` (the node's or the database's clock moved)."""
    if previous is not None and abs(measured - previous) <= within:
        return previous
    return measured


# How long an offset read serves without a new reading (each is a round trip to the
# database, a tenth of a small cycle's time). A node's clock being set is seen at once
# (below); the database host's clock being set, within this.
REREAD_S = 1.0


@dataclass
class Offset:
    """The offset in use and when it was read: reused while it is fresh and this node's
    wall clock has not been set since (its distance to the monotonic clock unchanged
    within STEADY_S). From 0: a node whose clock agrees with the database's within the
    jitter stores its times as they are."""

    value: float = 0.0
    wall_less_mono: float | None = None  # at the last reading (None: never read)
    read_at: float = 0.0  # monotonic

    def current(self, wall: float, mono: float) -> float | None:
        """The offset to use now, or None when it must be read again."""
        if self.wall_less_mono is None or mono - self.read_at >= REREAD_S:
            return None
        if abs((wall - mono) - self.wall_less_mono) > STEADY_S:
            return None  # this node's clock was set
        return self.value

    def read(self, measured: float, wall: float, mono: float) -> float:
        """Takes a new reading (`offset` at `wall`/`mono`); returns the offset to use."""
        self.value = settled(self.value, measured)
        self.wall_less_mono = wall - mono
        self.read_at = mono
        return self.value


def _moved(at: float | None, shift: float) -> float | None:
    return None if at is None else at + shift


def shifted(inv: AsyncInvocation, shift: float) -> AsyncInvocation:
    """The event with its times moved by `shift` (to the database's clock: the offset;
    back to the node's: its negation)."""
    if not shift:
        return inv
    return dataclasses.replace(
        inv, created_at=inv.created_at + shift, next_attempt_at=inv.next_attempt_at + shift,
        started_at=_moved(inv.started_at, shift), finished_at=_moved(inv.finished_at, shift))


def shifted_finish(finish: Finish, shift: float) -> Finish:
    """An ended attempt's record with its times (retry time, end) moved by `shift`."""
    if not shift:
        return finish
    return dataclasses.replace(finish, next_attempt_at=finish.next_attempt_at + shift,
                               finished_at=finish.finished_at + shift)
