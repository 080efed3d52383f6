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


def test_the_wait_is_the_policys_backoff_times_the_attempts_made() -> None:
    policy = RetryPolicy(retries=5, backoff_s=7.0)
    waits = [next_step(replace(EVENT, attempts=n), policy, ok=False, now=5000.0)
             for n in range(1, 6)]
    assert waits == [("queued", 5000.0 + 7.0 * n) for n in range(1, 6)]


def test_the_last_allowed_retry_is_queued_and_the_one_after_is_not() -> None:
    policy = RetryPolicy(retries=3, backoff_s=1.0)
    assert next_step(replace(EVENT, attempts=3), policy, ok=False, now=1100.0)[0] == "queued"
    assert next_step(replace(EVENT, attempts=4), policy, ok=False, now=1100.0) == (
        "failed", 1100.0)


def test_the_age_counts_from_the_events_creation_not_from_its_last_attempt() -> None:
    # Attempt 2 fails 5 h 59 m after creation: a retry 2 min later would be past 6 h.
    late = replace(EVENT, attempts=2, next_attempt_at=1000.0 + 21000.0)
    assert next_step(late, RetryPolicy(), ok=False, now=1000.0 + 21540.0) == (
        "failed", 1000.0 + 21540.0)
    assert next_step(late, RetryPolicy(), ok=False, now=1000.0 + 21000.0) == (
        "queued", 1000.0 + 21120.0)


def test_a_success_past_the_maximum_age_still_counts() -> None:
    assert next_step(EVENT, RetryPolicy(max_event_age_s=1.0), ok=True, now=99999.0) == (
        "succeeded", 99999.0)
