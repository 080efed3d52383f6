"""What an asynchronous invocation is, and the pure rule for what follows an attempt.

Like AWS Lambda's asynchronous invocation: by default two retries, the first after one
minute and the second after two more; an event out of attempts, or older than the
maximum event age, becomes a dead letter with its last error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Status = Literal["queued", "running", "succeeded", "failed"]
STATUSES: tuple[Status, ...] = ("queued", "running", "succeeded", "failed")


@dataclass(frozen=True)
class AsyncInvocation:
    id: str
    function: str
    payload: bytes
    source: str  # "api" | "http" | "schedule"
    status: Status
    attempts: int
    created_at: float
    next_attempt_at: float
    started_at: float | None = None
    finished_at: float | None = None
    status_code: int | None = None
    result: bytes | None = None
    last_error: str = ""


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 2
    max_event_age_s: float = 6 * 3600
    backoff_s: float = 60.0  # attempt n (n >= 1) waits n x backoff before the next


def next_step(invocation: AsyncInvocation, policy: RetryPolicy, *, ok: bool,
              now: float) -> tuple[Status, float]:
    """(new status, next attempt time) after an attempt ended."""
    if ok:
        return "succeeded", now
    out_of_attempts = invocation.attempts > policy.retries
    retry_at = now + policy.backoff_s * invocation.attempts
    too_old = retry_at - invocation.created_at > policy.max_event_age_s
    if out_of_attempts or too_old:
        return "failed", now
    return "queued", retry_at


@dataclass(frozen=True)
class Finish:
    """How an attempt ended, as it is written to the store (batched with others)."""

    id: str
    status: Status
    next_attempt_at: float
    finished_at: float
    status_code: int | None
    result: bytes | None
    error: str
    # The attempt this ends (the invocation's attempts when it was claimed): on a shared
    # database only that attempt, by its owner, may be recorded (queue/pg_table.py).
    attempt: int = 0


def finish_of(invocation: AsyncInvocation, policy: RetryPolicy, *, ok: bool, now: float,
              status_code: int | None, result: bytes | None, error: str) -> Finish:
    """The record of an ended attempt: what `next_step` says, with the attempt's result."""
    status, retry_at = next_step(invocation, policy, ok=ok, now=now)
    return Finish(invocation.id, status, retry_at, now, status_code, result, error,
                  invocation.attempts)
