"""The daemon's own Prometheus registry (prometheus-client).

Names carry the `lambdad_` prefix and base units (seconds). Labels are bounded:
function names (a deployed set), status codes, gRPC methods and codes, instance
states; never request ids or raw paths.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from lambdad.metrics.stats import StatsRecorder

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0, 60.0, 300.0, 900.0)
START_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0)
BUILD_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


@dataclass(frozen=True)
class PoolSample:
    function: str
    running: int
    busy: int
    starting: int
    draining: int
    queued: int
    paused: int = 0
    frozen: int = 0


COLD_PATHS = ("cell", "container")  # a new instance; "unpaused" is a thaw, not a start


@dataclass(frozen=True)
class CellSample:
    resource_class: str
    ready: int
    starting: int


class _CellCollector(Collector):
    """Stem cells by class and state, read from the runtime at scrape time."""

    def __init__(self, sample: Callable[[], Iterable[CellSample]]) -> None:
        self._sample = sample

    def collect(self) -> Iterator[Metric]:
        cells = GaugeMetricFamily(
            "lambdad_stem_cells", "Pre-started generic instances by resource class and state",
            labels=["resource_class", "state"],
        )
        for sample in self._sample():
            cells.add_metric([sample.resource_class, "ready"], sample.ready)
            cells.add_metric([sample.resource_class, "starting"], sample.starting)
        yield cells


@dataclass(frozen=True)
class GatewaySample:
    connections: int  # open client connections
    connection_limit: int  # the effective cap (max_connections, lowered by the fd limit)
    refused_connections: int  # closed at once at the cap
    body_bytes: int  # request-body bytes buffered now
    body_peak_bytes: int  # the most ever buffered at once
    body_limit_bytes: int  # max_buffered_bodies
    refused_bodies: int  # answered 503 because the body budget was spent


class _GatewayCollector(Collector):
    """The gateway's shared limits, read at scrape time: how close a flood gets."""

    def __init__(self, sample: Callable[[], GatewaySample]) -> None:
        self._sample = sample

    def collect(self) -> Iterator[Metric]:
        g = self._sample()
        for name, text, value in (
            ("lambdad_gateway_connections", "Open client connections", g.connections),
            ("lambdad_gateway_connection_limit", "Client connections the gateway accepts "
             "(max_connections, lowered to fit the open-files limit)", g.connection_limit),
            ("lambdad_gateway_buffered_body_bytes", "Request-body bytes held in memory now",
             g.body_bytes),
            ("lambdad_gateway_buffered_body_peak_bytes", "The most request-body bytes held "
             "in memory at once since start", g.body_peak_bytes),
            ("lambdad_gateway_buffered_body_limit_bytes", "max_buffered_bodies, in bytes",
             g.body_limit_bytes),
        ):
            yield GaugeMetricFamily(name, text, value=value)
        refused = CounterMetricFamily(
            "lambdad_gateway_refused", "Connections closed at the connection cap and "
            "requests answered 503 because the body budget was spent", labels=["reason"])
        refused.add_metric(["connections"], g.refused_connections)
        refused.add_metric(["body_budget"], g.refused_bodies)
        yield refused


class _PoolCollector(Collector):
    """Instances by state and queue depth, read from the runtime at scrape time."""

    def __init__(self, sample: Callable[[], Iterable[PoolSample]]) -> None:
        self._sample = sample

    def collect(self) -> Iterator[Metric]:
        instances = GaugeMetricFamily(
            "lambdad_instances", "Function instances by state", labels=["function", "state"]
        )
        queued = GaugeMetricFamily(
            "lambdad_queue_depth", "Requests waiting for an instance slot", labels=["function"]
        )
        for pool in self._sample():
            # Disjoint states: idle (running, not paused), paused (pause_after), frozen
            # (past idle_timeout, kept for the freeze window), busy; starting and
            # draining are not in `running`.
            instances.add_metric([pool.function, "idle"],
                                 pool.running - pool.busy - pool.paused - pool.frozen)
            instances.add_metric([pool.function, "paused"], pool.paused)
            instances.add_metric([pool.function, "frozen"], pool.frozen)
            instances.add_metric([pool.function, "busy"], pool.busy)
            instances.add_metric([pool.function, "starting"], pool.starting)
            instances.add_metric([pool.function, "draining"], pool.draining)
            queued.add_metric([pool.function], pool.queued)
        yield instances
        yield queued


class _NodeLabelled:
    """The registry's families again, with `node="<name>"` added to every sample: in a
    cluster each node exports its own /metrics, and one Prometheus scraping them all
    tells the nodes apart by it (beside its own `instance` label, which is an address)."""

    def __init__(self, registry: CollectorRegistry, node: str) -> None:
        self._registry = registry
        self._node = node

    def collect(self) -> Iterator[Metric]:
        for family in self._registry.collect():
            labelled = Metric(family.name, family.documentation, family.type, family.unit)
            labelled.samples = [
                sample._replace(labels={**sample.labels, "node": self._node})
                for sample in family.samples]
            yield labelled


class Metrics:
    def __init__(self, node: str = "") -> None:
        """`node`: this node's name in cluster mode (every sample gets the label);
        "" on SQLite, where the series stay as they were."""
        self.node = node
        self.registry = CollectorRegistry(auto_describe=True)
        self.stats = StatsRecorder()
        r = self.registry
        self.invocations = Counter(
            "lambdad_invocations", "Invocations by function, type and HTTP status code",
            ["function", "type", "code"], registry=r)
        self.duration = Histogram(
            "lambdad_invocation_duration_seconds", "Time from request to response head",
            ["function"], buckets=LATENCY_BUCKETS, registry=r)
        self.cold_starts = Counter(
            "lambdad_cold_starts", "Invocations that waited for an instance to start, by "
            "how it started: cell (a specialized stem cell) or container",
            ["function", "path"], registry=r)
        self.init_duration = Histogram(
            "lambdad_instance_init_duration_seconds",
            "Time from container create to its socket answering", ["function"],
            buckets=START_BUCKETS, registry=r)
        self.timeouts = Counter(
            "lambdad_invocation_timeouts", "Invocations that passed the function's timeout",
            ["function"], registry=r)
        self.errors = Counter(
            "lambdad_invocation_errors",
            "Invocations that failed: the handler raised, or the instance failed",
            ["function", "kind"], registry=r)
        self.throttles = Counter(
            "lambdad_throttles", "Requests answered 429 at max_instances", ["function"],
            registry=r)
        self.async_refused = Counter(
            "lambdad_async_refused",
            "Asynchronous invocations refused because the function already had "
            "max_queued_events waiting, by source (http, api, schedule)",
            ["function", "source"], registry=r)
        self.deploys = Counter(
            "lambdad_deploys", "Deploys, config changes and rollbacks by result",
            ["kind", "result"], registry=r)
        self.build_duration = Histogram(
            "lambdad_image_build_duration_seconds", "Image build time", buckets=BUILD_BUCKETS,
            registry=r)
        self.artifact_fetch = Histogram(
            "lambdad_artifact_fetch_seconds", "Cluster mode: time a cold start spent making "
            "a version runnable on this node: its artifact fetched from the database "
            "(kind artifact), or its image built from the stored context (kind image)",
            ["kind"], buckets=BUILD_BUCKETS, registry=r)
        self.log_followers = Gauge(
            "lambdad_log_followers", "Open `logs -f` streams", registry=r)
        self.log_dropped_lines = Counter(
            "lambdad_log_dropped_lines", "Function log lines dropped, by where: runtime (the "
            "instance's log queue was full: the function wrote faster than lambdad read, or "
            "while no lambdad read) or daemon (lambdad's log write buffer was full)",
            ["function", "where"], registry=r)
        self.log_dropped_bytes = Counter(
            "lambdad_log_dropped_bytes", "Bytes of the function log lines dropped, as "
            "lambdad_log_dropped_lines_total counts them", ["function", "where"], registry=r)
        self.grpc_requests = Counter(
            "lambdad_grpc_requests", "Control API calls by method and status code",
            ["method", "code"], registry=r)
        # The labelled children an invocation counts into, by (function, type, code):
        # `labels()` checks, stringifies and looks its labels up under a lock on every call,
        # twice per request. Bounded like the labels are (deployed functions, a few
        # statuses); a deleted function's entries go with `forget`.
        self._hot: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def watch_pools(self, sample: Callable[[], Iterable[PoolSample]]) -> None:
        self.registry.register(_PoolCollector(sample))

    def watch_cells(self, sample: Callable[[], Iterable[CellSample]]) -> None:
        self.registry.register(_CellCollector(sample))

    def watch_gateway(self, sample: Callable[[], GatewaySample]) -> None:
        self.registry.register(_GatewayCollector(sample))

    def invocation(self, function: str, kind: str, code: int, seconds: float, *,
                   start: str = "", function_error: bool = False) -> None:
        """One finished invocation, whoever made it (gateway, Invoke RPC); `start` says how
        its instance was got (warm, cell, unpaused, container; "" when none served it)."""
        cold = start in COLD_PATHS
        self.stats.invocation(function, seconds, error=function_error or code >= 500,
                              cold=cold, at=time.time())
        key = (function, kind, code)
        children = self._hot.get(key)
        if children is None:
            children = self._hot[key] = (self.invocations.labels(function, kind, str(code)),
                                         self.duration.labels(function))
        counter, histogram = children
        counter.inc()
        histogram.observe(seconds)
        if cold:
            self.cold_starts.labels(function, start).inc()
        if code == 504:
            self.timeouts.labels(function).inc()
        elif code == 429:
            self.throttles.labels(function).inc()
        elif function_error:
            self.errors.labels(function, "handler").inc()
        elif code in (502, 503):
            self.errors.labels(function, "instance").inc()

    def forget(self, function: str) -> None:
        """A deleted function: its cached children go (its series stay, as counters do)."""
        for key in [key for key in self._hot if key[0] == function]:
            del self._hot[key]

    def log_dropped(self, where: str, function: str, lines: int, size: int) -> None:
        """Log lines of `function` dropped by the runtime's queue or lambdad's buffer."""
        self.log_dropped_lines.labels(function, where).inc(lines)
        self.log_dropped_bytes.labels(function, where).inc(size)

    def render(self) -> bytes:
        if self.node:
            return bytes(generate_latest(_NodeLabelled(self.registry, self.node)))
        return bytes(generate_latest(self.registry))
