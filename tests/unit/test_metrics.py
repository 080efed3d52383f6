"""The metric rules and the admin listener's routing, without a daemon."""

from __future__ import annotations

import asyncio

from lambdad.metrics import AdminServer, Metrics
from lambdad.metrics.admin import MAX_CONNECTIONS
from lambdad.metrics.registry import CellSample, PoolSample


def test_invocation_outcomes_land_in_the_right_counters() -> None:
    metrics = Metrics()
    metrics.invocation("f", "http", 200, 0.01, start="cell")
    metrics.invocation("f", "http", 200, 0.01, start="container")
    metrics.invocation("f", "http", 200, 0.01, start="unpaused")  # a thaw, not a start
    metrics.invocation("f", "http", 200, 0.01, start="warm")
    metrics.invocation("f", "http", 500, 0.02, function_error=True)
    metrics.invocation("f", "http", 502, 0.03)
    metrics.invocation("f", "direct", 504, 1.0)
    metrics.invocation("f", "http", 429, 0.5)
    text = metrics.render().decode()
    assert 'lambdad_invocations_total{code="200",function="f",type="http"} 4.0' in text
    assert 'lambdad_cold_starts_total{function="f",path="cell"} 1.0' in text
    assert 'lambdad_cold_starts_total{function="f",path="container"} 1.0' in text
    assert 'path="unpaused"' not in text and 'path="warm"' not in text
    assert 'lambdad_invocation_errors_total{function="f",kind="handler"} 1.0' in text
    assert 'lambdad_invocation_errors_total{function="f",kind="instance"} 1.0' in text
    assert 'lambdad_invocation_timeouts_total{function="f"} 1.0' in text
    assert 'lambdad_throttles_total{function="f"} 1.0' in text
    assert 'lambdad_invocation_duration_seconds_count{function="f"} 8.0' in text


def test_pool_states_are_read_at_scrape_time() -> None:
    metrics = Metrics()
    samples = [PoolSample("f", running=3, busy=1, starting=2, draining=0, queued=4)]
    metrics.watch_pools(lambda: samples)
    text = metrics.render().decode()
    assert 'lambdad_instances{function="f",state="idle"} 2.0' in text
    assert 'lambdad_instances{function="f",state="starting"} 2.0' in text
    assert 'lambdad_queue_depth{function="f"} 4.0' in text
    samples.clear()
    assert 'function="f"' not in metrics.render().decode().split("lambdad_instances")[-1]


def test_paused_and_frozen_instances_are_states_of_their_own() -> None:
    """Disjoint states: a paused or frozen instance is not also counted idle."""
    metrics = Metrics()
    metrics.watch_pools(lambda: [PoolSample("f", running=6, busy=1, starting=0, draining=0,
                                            queued=0, paused=2, frozen=2)])
    text = metrics.render().decode()
    assert 'lambdad_instances{function="f",state="idle"} 1.0' in text
    assert 'lambdad_instances{function="f",state="paused"} 2.0' in text
    assert 'lambdad_instances{function="f",state="frozen"} 2.0' in text


def test_stem_cells_are_read_at_scrape_time() -> None:
    metrics = Metrics()
    metrics.watch_cells(lambda: [CellSample("128MiB/1cpu/256pids/none", ready=2, starting=1)])
    text = metrics.render().decode()
    assert ('lambdad_stem_cells{resource_class="128MiB/1cpu/256pids/none",state="ready"} 2.0'
            in text)
    assert ('lambdad_stem_cells{resource_class="128MiB/1cpu/256pids/none",state="starting"} '
            '1.0' in text)


def test_admin_routes() -> None:
    admin = AdminServer(lambda: b"m 1\n", lambda: {"status": "ok"})
    assert admin.respond(b"GET", b"/metrics")[0::2] == (200, b"m 1\n")
    assert admin.respond(b"GET", b"/healthz?x=1")[2] == b'{"status": "ok"}\n'
    assert admin.respond(b"POST", b"/metrics")[0] == 405
    assert admin.respond(b"GET", b"/")[0] == 404


def test_admin_listener_caps_its_connections_and_keeps_serving() -> None:
    """Idle connections to the admin listener cannot take the daemon's descriptors."""

    async def main() -> None:
        admin = AdminServer(lambda: b"m 1\n", lambda: {"status": "ok"})
        await admin.start("127.0.0.1", 0)
        try:
            held = [await asyncio.open_connection("127.0.0.1", admin.port)
                    for _ in range(MAX_CONNECTIONS)]
            await asyncio.sleep(0.1)
            reader, writer = await asyncio.open_connection("127.0.0.1", admin.port)
            assert await asyncio.wait_for(reader.read(), 5) == b""  # closed at once
            writer.close()
            for _, idle in held:
                idle.close()
            await asyncio.sleep(0.1)
            reader, writer = await asyncio.open_connection("127.0.0.1", admin.port)
            writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            reply = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            assert reply.startswith(b"HTTP/1.1 200 ") and reply.endswith(b"m 1\n")
        finally:
            await admin.stop()

    asyncio.run(main())


def test_cached_children_count_into_the_same_series_and_go_with_forget() -> None:
    """The invocation path keeps each function's labelled children; forgetting a deleted
    function drops them, and a function of the same name deployed again counts on."""
    metrics = Metrics()
    for _ in range(3):
        metrics.invocation("f", "http", 200, 0.01)
    metrics.invocation("f", "direct", 200, 0.01)
    metrics.invocation("g", "http", 404, 0.01)
    metrics.forget("f")
    assert all(key[0] != "f" for key in metrics._hot) and ("g", "http", 404) in metrics._hot
    metrics.invocation("f", "http", 200, 0.02)
    text = metrics.render().decode()
    assert 'lambdad_invocations_total{code="200",function="f",type="http"} 4.0' in text
    assert 'lambdad_invocations_total{code="200",function="f",type="direct"} 1.0' in text
    assert 'lambdad_invocations_total{code="404",function="g",type="http"} 1.0' in text
    assert 'lambdad_invocation_duration_seconds_count{function="f"} 5.0' in text


def _samples(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def _loaded(metrics: Metrics) -> Metrics:
    metrics.invocation("greet", "http", 200, 0.01, start="cell")
    metrics.invocation("greet", "http", 500, 0.02, function_error=True)
    metrics.watch_pools(lambda: [PoolSample("greet", running=2, busy=1, starting=0,
                                            draining=0, queued=1)])
    metrics.watch_cells(lambda: [CellSample("128MiB/1cpu/256pids/none", ready=2,
                                            starting=1)])
    return metrics


def test_in_cluster_mode_every_sample_carries_the_node_label() -> None:
    samples = _samples(_loaded(Metrics(node="n1")).render().decode())
    assert len(samples) > 20  # counters, histograms and the scrape-time collectors
    assert all('node="n1"' in s for s in samples), [s for s in samples if 'node="n1"' not in s]
    assert any(s.startswith("lambdad_invocations_total{") for s in samples)
    assert any(s.startswith("lambdad_instances{") for s in samples)


def test_on_sqlite_no_sample_has_a_node_label() -> None:
    samples = _samples(_loaded(Metrics()).render().decode())
    assert samples and not any("node=" in s for s in samples)
