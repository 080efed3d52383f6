"""The pure retry rule of asynchronous invocations (queue.model.next_step), as Lambda's:
two retries by default, one minute then two more, never past the maximum event age."""

from __future__ import annotations

from dataclasses import replace

from lambdad.queue.model import AsyncInvocation, RetryPolicy, next_step

EVENT = AsyncInvocation(id="e1", function="f", payload=b"{}", source="api", status="running",
                        attempts=1, created_at=1000.0, next_attempt_at=1000.0)


def test_a_success_ends_the_event_whatever_its_attempts() -> None:
    for attempts in (1, 3, 99):
        assert next_step(replace(EVENT, attempts=attempts), RetryPolicy(), ok=True,
                         now=2000.0) == ("succeeded", 2000.0)


def test_failures_retry_one_minute_then_two_more_then_become_dead_letters() -> None:
    policy = RetryPolicy()
    first = next_step(replace(EVENT, attempts=1), policy, ok=False, now=1001.0)
    assert first == ("queued", 1061.0)
    second = next_step(replace(EVENT, attempts=2), policy, ok=False, now=1062.0)
    assert second == ("queued", 1182.0)
    third = next_step(replace(EVENT, attempts=3), policy, ok=False, now=1183.0)
    assert third == ("failed", 1183.0)


def test_no_retries_means_the_first_failure_is_final() -> None:
    assert next_step(EVENT, RetryPolicy(retries=0), ok=False, now=1001.0) == (
        "failed", 1001.0)


def test_a_retry_past_the_maximum_event_age_is_not_scheduled() -> None:
    # Created at 1000; the first retry would run at 1061, 61 s after creation.
    at_the_limit = next_step(EVENT, RetryPolicy(max_event_age_s=61.0), ok=False, now=1001.0)
    assert at_the_limit == ("queued", 1061.0)
    past_it = next_step(EVENT, RetryPolicy(max_event_age_s=60.5), ok=False, now=1001.0)
    assert past_it == ("failed", 1001.0)
