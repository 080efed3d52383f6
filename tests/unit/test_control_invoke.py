"""The one invoke-and-observe path, the async queue's use cases (enqueue caps, delivery,
retry policy, redrive) with the real AsyncWorker, and the admin use cases (API keys,
schedules), through the ControlPlane facade and the parts lambdad wires around it."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from lambdad.errors import (
    FailedPrecondition,
    FunctionTimeout,
    InvalidArgument,
    NotFound,
    PayloadTooLarge,
    Throttled,
    Unavailable,
)
from lambdad.functions import Overrides
from lambdad.runtime.invocation import InvocationRequest
from tests.support.fakes import ControlParts, failing, response, run_with_parts

run = run_with_parts


def invocations(p: ControlParts, kind: str, code: int, function: str = "greet") -> float:
    return p.sample("lambdad_invocations_total", function=function, type=kind, code=str(code))


def http_request(function: str, received_at: float | None = None) -> InvocationRequest:
    return InvocationRequest(function=function, method=b"GET", target=b"/", headers=[],
                             body=b"", invocation_type="http", request_id="r-1",
                             received_at=received_at)


# The Invoker: every caller's invocations recorded once, by kind


def test_the_invoker_records_each_invocation_once_by_its_kind(tmp_path: Path) -> None:
    async def scenario(p: ControlParts) -> None:
        await p.deploy("greet")
        p.runtime.answer = lambda request: response(start="cell")
        answer = await p.invoker.invoke(http_request("greet"))
        await answer.read()
        assert invocations(p, "http", 200) == 1
        assert p.sample("lambdad_cold_starts_total", function="greet", path="cell") == 1
        result = await p.control.invoke("greet", b'{"a": 1}')
        assert (result.status, result.payload, result.function_error) == (
            200, b'{"ok": true}', "")
        assert invocations(p, "direct", 200) == 1
        assert invocations(p, "http", 200) == 1  # not recorded twice
        assert p.runtime.invoked[-1].invocation_type == "direct"
        assert p.metrics.stats.drain()[0].invocations == 2
    run(tmp_path, scenario)


def test_the_invoker_times_from_the_requests_arrival(tmp_path: Path) -> None:
    async def scenario(p: ControlParts) -> None:
        await p.deploy("greet")
        arrived = asyncio.get_running_loop().time() - 2.5  # the body took 2.5 s to come
        await (await p.invoker.invoke(http_request("greet", arrived))).read()
        total = p.sample("lambdad_invocation_duration_seconds_sum", function="greet")
        assert 2.5 <= total < 10
    run(tmp_path, scenario)


def test_the_invoker_records_failures_with_the_status_callers_see(tmp_path: Path) -> None:
    async def scenario(p: ControlParts) -> None:
        await p.deploy("greet")
        p.runtime.answer = failing(FunctionTimeout("no answer within 3 s"))
        with pytest.raises(FunctionTimeout):
            await p.invoker.invoke(http_request("greet"))
        assert invocations(p, "http", 504) == 1
        assert p.sample("lambdad_invocation_timeouts_total", function="greet") == 1
        p.runtime.answer = failing(RuntimeError("a bug"))
        with pytest.raises(RuntimeError):
            await p.invoker.invoke(http_request("greet"))
        assert invocations(p, "http", 500) == 1
        # An unknown function makes no label: any Host header would make a new one.
        with pytest.raises(NotFound):
            await p.invoker.invoke(http_request("nosuch"))
        with pytest.raises(NotFound):
            await p.control.invoke("nosuch", b"{}")
        assert 'function="nosuch"' not in p.metrics.render().decode()
        p.runtime.answer = lambda r: response(500, b'{"errorMessage": "x"}',
                                              function_error="Unhandled")
        result = await p.control.invoke("greet", b"{}")
        assert result.function_error == "Unhandled"
        assert p.sample("lambdad_invocation_errors_total", function="greet",
                        kind="handler") == 1
    run(tmp_path, scenario)


def test_direct_invoke_checks_the_payload_before_any_instance(tmp_path: Path) -> None:
    async def scenario(p: ControlParts) -> None:
        await p.deploy("greet")
        with pytest.raises(InvalidArgument):
            await p.control.invoke("greet", b"[" * 100_000)
        with pytest.raises(InvalidArgument):
            await p.control.invoke("Bad_Name!", b"{}")
        assert p.runtime.invoked == []
        result = await p.control.invoke("greet", b"", version=1)
        assert p.runtime.invoked[-1].body == b"{}"
        assert p.runtime.invoked[-1].version == 1
        assert result.request_id == p.runtime.invoked[-1].request_id
    run(tmp_path, scenario)


# The async queue


def test_enqueue_stores_the_event_and_wakes_the_worker(tmp_path: Path) -> None:
    async def scenario(p: ControlParts) -> None:
        await p.deploy("greet")
        assert not p.wake.is_set()
        invocation_id = await p.control.enqueue("greet", b'{"n": 1}', source="api")
        assert p.wake.is_set()
        stored = await p.control.invocation(invocation_id[:8])
        assert (stored.status, stored.payload, stored.source) == ("queued", b'{"n": 1}', "api")
        assert [i.id for i in await p.control.invocations("greet", "queued", 0)] == [
            invocation_id]
        with pytest.raises(InvalidArgument, match="status must be"):
            await p.control.invocations("greet", "lost", 0)
    run(tmp_path, scenario)


def test_enqueue_is_bounded(tmp_path: Path) -> None:
    async def scenario(p: ControlParts) -> None:
        await p.deploy("greet")
        await p.control.update_config("greet", Overrides(timeout_s=7))
        await p.control.enqueue("greet", b"{}", source="http")
        await p.control.enqueue("greet", b"{}", source="http")
        with pytest.raises(Throttled) as refused:
            await p.control.enqueue("greet", b"{}", source="http")
        assert refused.value.retry_after == 7  # the function's timeout, within [1, 60]
        assert p.sample("lambdad_async_refused_total", function="greet", source="http") == 1
        with pytest.raises(PayloadTooLarge):
            await p.control.enqueue("greet", b'"' + b"x" * 100 + b'"', source="api")
        with pytest.raises(InvalidArgument):
            await p.control.enqueue("greet", b"not json", source="api")
        with pytest.raises(NotFound):
            await p.control.enqueue("nosuch", b"{}", source="api")
        assert len(await p.control.invocations("greet", "", 0)) == 2
    run(tmp_path, scenario, max_queued_events=2, max_event_bytes=64)


def test_deliver_reports_each_outcome_and_records_it_as_an_event(tmp_path: Path) -> None:
    async def scenario(p: ControlParts) -> None:
        await p.deploy("greet")
        invocation_id = await p.control.enqueue("greet", b'{"n": 1}', source="api")
        queued = await p.control.invocation(invocation_id)
        assert await p.queue.deliver(queued) == (True, 200, b'{"ok": true}', "")
        request = p.runtime.invoked[-1]
        assert (request.invocation_type, request.request_id, request.body) == (
            "event", invocation_id, b'{"n": 1}')
        assert invocations(p, "event", 200) == 1
        p.runtime.answer = lambda r: response(200, b'{"errorType": "KeyError"}',
                                              function_error="Unhandled")
        assert await p.queue.deliver(queued) == (
            False, 200, b'{"errorType": "KeyError"}', '{"errorType": "KeyError"}')
        p.runtime.answer = failing(Unavailable("no instance could start"))
        assert await p.queue.deliver(queued) == (False, 503, None, "no instance could start")
        assert invocations(p, "event", 503) == 1
    run(tmp_path, scenario)


def test_retry_policy_and_delivery_limit_follow_the_active_version(tmp_path: Path) -> None:
    async def scenario(p: ControlParts) -> None:
        policy = p.queue.retry_policy("greet")
        assert (policy.retries, policy.backoff_s) == (0, 30.0)  # no such function: no retry
        assert p.queue.delivery_limit("greet") == 1
        await p.deploy("greet", overrides=Overrides(concurrency=3, max_instances=4))
        policy = p.queue.retry_policy("greet")
        assert (policy.retries, policy.max_event_age_s, policy.backoff_s) == (
            2, 6 * 3600, 30.0)
        assert p.queue.delivery_limit("greet") == 12
    run(tmp_path, scenario)


async def wait_status(p: ControlParts, invocation_id: str, *statuses: str) -> Any:
    for _ in range(500):
        found = await p.control.invocation(invocation_id)
        if found.status in statuses:
            return found
        await asyncio.sleep(0.01)
    raise AssertionError(f"invocation stayed {found.status}")


def test_the_worker_delivers_retries_and_gives_up(tmp_path: Path) -> None:
    async def scenario(p: ControlParts) -> None:
        await p.deploy("greet")
        p.runtime.answer = failing(Unavailable("down"))
        p.worker.start()
        try:
            invocation_id = await p.control.enqueue("greet", b"{}", source="api")
            before = time.time()
            retry = await wait_status(p, invocation_id, "queued")
            while retry.attempts == 0:
                retry = await wait_status(p, invocation_id, "queued")
            assert retry.attempts == 1 and retry.last_error == "down"
            assert retry.next_attempt_at >= before + 30  # backoff x attempts
            # The function now allows no retry: the next failure is final.
            active = p.runtime.active["greet"]
            p.runtime.active["greet"] = replace(
                active, config=replace(active.config, async_retries=0))
            second = await p.control.enqueue("greet", b"{}", source="api")
            failed = await wait_status(p, second, "failed")
            assert (failed.attempts, failed.status_code, failed.last_error) == (
                1, 503, "down")
            # Redriven, it is delivered again, and this time it succeeds.
            p.runtime.answer = lambda r: response(202, b"done")
            p.wake.clear()
            assert await p.control.redrive(second[:8], "") == 1
            done = await wait_status(p, second, "succeeded")
            assert (done.status_code, done.result) == (202, b"done")
        finally:
            await p.worker.stop()
    run(tmp_path, scenario)


def test_redrive_takes_only_failed_invocations(tmp_path: Path) -> None:
    async def scenario(p: ControlParts) -> None:
        await p.deploy("greet")
        queued = await p.control.enqueue("greet", b"{}", source="api")
        with pytest.raises(FailedPrecondition, match="only failed"):
            await p.control.redrive(queued, "")
        p.wake.clear()
        assert await p.control.redrive("", "greet") == 0
        assert not p.wake.is_set()  # nothing queued again: no wake-up
        with pytest.raises(NotFound):
            await p.control.redrive("", "nosuch")
    run(tmp_path, scenario)


# Administration


def test_keys_reach_the_keyring_at_once(tmp_path: Path) -> None:
    async def scenario(p: ControlParts) -> None:
        key, token = await p.control.create_key("ci-deploy", "deployer")
        assert p.keyring.identify(token) == ("ci-deploy", "deployer")
        assert [k.name for k in await p.control.list_keys()] == ["ci-deploy"]
        assert token.split("_", 2)[2] not in repr(await p.store.keys.all())
        revoked = await p.control.revoke_key("ci-deploy")
        assert revoked.id == key.id and revoked.revoked_at is not None
        assert p.keyring.identify(token) is None
        with pytest.raises(InvalidArgument):
            await p.control.create_key("bad name!", "deployer")
        with pytest.raises(InvalidArgument, match="role"):
            await p.control.create_key("x", "root")
    run(tmp_path, scenario)


def test_schedules_reach_the_cron_runner_at_once(tmp_path: Path) -> None:
    async def scenario(p: ControlParts) -> None:
        await p.deploy("greet")
        schedule = await p.control.create_schedule("greet", " */5 * * * * ", "", b"", "")
        assert (schedule.cron, schedule.tz, schedule.data, schedule.overlap) == (
            "*/5 * * * *", "UTC", b"{}", "skip")
        next_run = p.cron.next_run(schedule.id)
        assert next_run is not None and next_run % 300 == 0
        [(listed, listed_next, status)] = await p.control.schedules("greet")
        assert (listed.id, listed_next, status) == (schedule.id, next_run, "")
        # A run goes through the queue like any event.
        invocation_id = await p.queue.enqueue_scheduled(schedule, next_run, False)
        assert (await p.control.invocation(invocation_id)).source == "schedule"
        deleted = await p.control.delete_schedule(schedule.id[:6])
        assert deleted.id == schedule.id
        assert p.cron.next_run(schedule.id) is None
        assert await p.control.schedules("") == []
        with pytest.raises(NotFound):
            await p.control.create_schedule("nosuch", "* * * * *", "UTC", b"{}", "skip")
        with pytest.raises(InvalidArgument):
            await p.control.create_schedule("greet", "every day", "UTC", b"{}", "skip")
    run(tmp_path, scenario)
