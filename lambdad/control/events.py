"""Asynchronous invocations: the bounded queue's front door (enqueue, redrive), one
delivery attempt, and the per-function retry policy and delivery limit the AsyncWorker
asks for. An accepted event goes through the intake, handed in at construction and shared
with the worker (whose next cycle stores it and wakes on it), so neither needs the other.
"""

from __future__ import annotations

import time

from lambdad.control.invoke import Invoker, function_error
from lambdad.control.ports import Runtime
from lambdad.errors import (
    FailedPrecondition,
    InvalidArgument,
    LambdaError,
    NotFound,
    PayloadTooLarge,
    Throttled,
)
from lambdad.functions import validate_name
from lambdad.httpstatus import status_for
from lambdad.jsontext import parse_json
from lambdad.metrics import Metrics
from lambdad.queue.intake import Intake
from lambdad.queue.model import STATUSES, AsyncInvocation, RetryPolicy
from lambdad.queue.room import Capacity
from lambdad.requestid import new_request_id
from lambdad.runtime.invocation import InvocationRequest
from lambdad.scheduler.cron import Schedule, event_payload
from lambdad.store import Store

# (ok, status code, response body, error text): what the AsyncWorker records
Outcome = tuple[bool, int | None, bytes | None, str]
RESULT_BYTES = 256 * 1024  # the most of a response body kept with the invocation
ERROR_CHARS = 2000


class AsyncQueue:
    def __init__(
        self, *, store: Store, runtime: Runtime, invoker: Invoker, intake: Intake,
        metrics: Metrics | None = None, backoff_s: float = 60.0,
        max_queued_events: int = 1000, max_event_bytes: int = 256 * 1024,
    ) -> None:
        self._store = store
        self._runtime = runtime
        self._invoker = invoker
        self._intake = intake
        self._metrics = metrics
        self.backoff_s = backoff_s
        self.max_queued_events = max_queued_events
        self.max_event_bytes = max_event_bytes

    async def enqueue(self, name: str, payload: bytes, *, source: str) -> str:
        """Writes the event to the store before returning its id (the 202 comes after):
        its transaction has committed, the worker's next cycle (group commit: with the
        events accepted meanwhile; see lambdad.queue.intake).

        Anyone who can reach a public function can queue events for it, so the queue is
        bounded: at most `max_queued_events` waiting per function (Throttled beyond, which
        is 429 with Retry-After at the gateway and RESOURCE_EXHAUSTED over gRPC), each at
        most `max_event_bytes`, so one function's queue holds a bounded amount of disk."""
        validate_name(name)
        version = self._runtime.active_version(name)
        if version is None:
            raise NotFound(f"no function named {name!r}")
        body = payload or b"{}"
        if len(body) > self.max_event_bytes:
            raise PayloadTooLarge(
                f"an asynchronous invocation's payload is limited to {self.max_event_bytes} "
                f"bytes (this one has {len(body)})")
        parse_json(body, "an asynchronous invocation's payload")
        now = time.time()
        invocation = AsyncInvocation(
            id=new_request_id(), function=name, payload=body, source=source,
            status="queued", attempts=0, created_at=now, next_attempt_at=now,
        )
        if not await self._intake.submit(invocation, self.max_queued_events):
            if self._metrics is not None:
                self._metrics.async_refused.labels(name, source).inc()
            # A queued event moves on when a delivery ends, at the latest after the timeout.
            raise Throttled(
                f"function {name!r} already has {self.max_queued_events} asynchronous "
                "invocations waiting, the most lambdad queues per function "
                "(max_queued_events); try again later",
                retry_after=min(60, max(1, version.config.timeout_s)))
        return invocation.id

    async def enqueue_scheduled(self, schedule: Schedule, when: float, catch_up: bool) -> str:
        """A cron run: an event like any other, with the schedule's payload."""
        return await self.enqueue(schedule.function,
                                  event_payload(schedule, when, catch_up=catch_up),
                                  source="schedule")

    async def deliver(self, invocation: AsyncInvocation) -> Outcome:
        """One attempt of a queued event, as invocation type `event`."""
        request = InvocationRequest(
            function=invocation.function, method=b"POST", target=b"/",
            headers=[(b"content-type", b"application/json")], body=invocation.payload,
            invocation_type="event", request_id=invocation.id,
        )
        try:
            response = await self._invoker.invoke(request)
        except LambdaError as exc:
            return False, status_for(exc)[0], None, exc.message
        body = await response.read()
        ok = 200 <= response.status < 300 and not function_error(response)
        error = "" if ok else body.decode("utf-8", "replace")[:ERROR_CHARS]
        return ok, response.status, body[:RESULT_BYTES], error

    def retry_policy(self, name: str) -> RetryPolicy:
        version = self._runtime.active_version(name)
        if version is None:
            return RetryPolicy(retries=0, backoff_s=self.backoff_s)
        return RetryPolicy(retries=version.config.async_retries,
                           max_event_age_s=version.config.async_max_age_s,
                           backoff_s=self.backoff_s)

    def delivery_limit(self, name: str) -> int:
        """At most as many deliveries at once as the function's instances can serve."""
        return self.delivery_capacity(name).limit

    def delivery_capacity(self, name: str) -> Capacity:
        """Its max_instances and each instance's concurrency (on a shared database a node
        claims by its own instances and the free leases: queue/room.py)."""
        version = self._runtime.active_version(name)
        if version is None:
            return Capacity(1, 1)
        scaling = version.config.scaling
        return Capacity(scaling.max_instances, scaling.concurrency)

    async def invocations(self, name: str, status: str, limit: int) -> list[AsyncInvocation]:
        validate_name(name)
        await self._store.get_function(name)
        if status and status not in STATUSES:
            raise InvalidArgument(f"status must be one of {', '.join(STATUSES)}")
        result: list[AsyncInvocation] = await self._store.invocations.of_function(
            name, status, limit or 100)
        return result

    async def invocation(self, prefix: str) -> AsyncInvocation:
        found: AsyncInvocation = await self._store.invocations.get(prefix)
        return found

    async def redrive(self, prefix: str, all_failed_of: str) -> int:
        """Queues failed invocations again: one by id prefix, or all of a function's."""
        if all_failed_of:
            validate_name(all_failed_of)
            await self._store.get_function(all_failed_of)
            ids = await self._store.invocations.failed_ids(all_failed_of)
        else:
            found = await self.invocation(prefix)
            if found.status != "failed":
                raise FailedPrecondition(
                    f"invocation {found.id} is {found.status}; only failed ones are redriven")
            ids = [found.id]
        count: int = await self._store.invocations.redrive(ids, time.time())
        if count:
            self._intake.wake.set()
        return count
