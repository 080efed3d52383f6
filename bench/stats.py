"""Summaries of latency samples and the table `make bench` prints."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from tables import text_table


@dataclass(frozen=True)
class Summary:
    count: int
    median_ms: float
    p90_ms: float
    min_ms: float
    p99_ms: float  # nearest rank: the slowest sample below 100 samples (not in the table)

    @classmethod
    def of(cls, samples_ns: list[int]) -> Summary:
        if not samples_ns:
            raise ValueError("no samples")
        ms = sorted(s / 1e6 for s in samples_ns)
        return cls(count=len(ms), median_ms=statistics.median(ms), p90_ms=percentile(ms, 90),
                   min_ms=ms[0], p99_ms=percentile(ms, 99))


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted values (p90 of 5 samples is the 5th)."""
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass
class Result:
    name: str
    what: str  # one line: what the timed unit is
    subject: Summary
    baseline_name: str
    baseline: Summary
    notes: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.subject.median_ms / self.baseline.median_ms

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "what": self.what,
            "subject": vars(self.subject),
            "baseline_name": self.baseline_name,
            "baseline": vars(self.baseline),
            "ratio_of_medians": round(self.ratio, 3),
            "notes": self.notes,
        }


def render_table(results: list[Result]) -> str:
    headers = ["benchmark", "n", "median ms", "p90 ms", "min ms", "baseline", "base n",
               "base median ms", "base p90 ms", "base min ms", "ratio"]
    rows = []
    for r in results:
        s, b = r.subject, r.baseline
        rows.append([r.name, str(s.count), f"{s.median_ms:.2f}", f"{s.p90_ms:.2f}",
                     f"{s.min_ms:.2f}", r.baseline_name, str(b.count), f"{b.median_ms:.2f}",
                     f"{b.p90_ms:.2f}", f"{b.min_ms:.2f}", f"{r.ratio:.2f}x"])
    return text_table(headers, rows, left={0, 5})  # text columns; numbers align right


@dataclass(frozen=True)
class LoadRow:
    """One closed-loop load run: a target at a number of concurrent keep-alive clients."""

    group: str  # warm, peer, ceiling
    target: str
    clients: int
    requests: int
    errors: int
    rps: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    gen_cpu_pct: float
    daemon_cpu_pct: float | None = None  # lambdad, averaged over the whole run
    instance_cpu_pct: float | None = None  # the function's container, likewise
    daemon_us_per_request: float | None = None  # lambdad CPU over the window / requests


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


def render_load_table(rows: list[LoadRow]) -> str:
    headers = ["load", "target", "clients", "n", "req/s", "p50 ms", "p99 ms", "mean ms",
               "errors", "gen CPU", "lambdad CPU", "lambdad us/req", "instance CPU"]
    cells = [[r.group, r.target, str(r.clients), str(r.requests), f"{r.rps:,.0f}",
              f"{r.p50_ms:.3f}", f"{r.p99_ms:.3f}", f"{r.mean_ms:.3f}", str(r.errors),
              f"{r.gen_cpu_pct:.0f}%", _pct(r.daemon_cpu_pct),
              "-" if r.daemon_us_per_request is None else f"{r.daemon_us_per_request:.0f}",
              _pct(r.instance_cpu_pct)]
             for r in rows]
    return text_table(headers, cells, left={0, 1})
