"""Samples of the daemon's Prometheus text at /metrics on the admin listener."""

from __future__ import annotations

import http.client
import re

from tests.support.daemon import Lambdad


def scrape(daemon: Lambdad) -> str:
    """The /metrics page as text."""
    conn = http.client.HTTPConnection("127.0.0.1", daemon.admin_port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def _samples(text: str, name: str, labels: dict[str, str]) -> list[float]:
    """The values of `name`'s samples whose labels include `labels`."""
    found = []
    for line in text.splitlines():
        if line.startswith((name + "{", name + " ")):
            have = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
            if all(have.get(k) == v for k, v in labels.items()):
                found.append(float(line.rsplit(" ", 1)[1]))
    return found


def sample(daemon: Lambdad, name: str, **labels: str) -> float:
    """One sample (the first that has `labels`); a missing metric is a failure, not a zero."""
    found = _samples(scrape(daemon), name, labels)
    if not found:
        raise AssertionError(f"{name}{labels} is not in /metrics")
    return found[0]


def total(daemon: Lambdad, name: str, **labels: str) -> float:
    """The sum over every sample that has `labels` (other labels summed over); 0 when none
    has been counted yet (a labelled counter appears with its first count)."""
    return sum(_samples(scrape(daemon), name, labels))
