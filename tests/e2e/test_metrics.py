"""Prometheus metrics and health on the admin listener, counted against known traffic."""

from __future__ import annotations

import http.client
import json
import re
from pathlib import Path

from tests.support.daemon import Lambdad


def _get(daemon: Lambdad, path: str) -> tuple[int, str, str]:
    conn = http.client.HTTPConnection("127.0.0.1", daemon.admin_port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.getheader("content-type") or "", response.read().decode()
    finally:
        conn.close()


def _value(text: str, name: str, **labels: str) -> float:
    """The sample `name{labels}` of a Prometheus text page (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_a_known_mix_of_invocations(lambdad: Lambdad, tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "handler.py").write_text(
        "import time\n\ndef handler(event, context):\n"
        "    params = event.get('queryStringParameters') or event\n"
        "    if params.get('fail'):\n        raise ValueError('asked to fail')\n"
        "    time.sleep(float(params.get('sleep', 0)))\n    return 'ok'\n"
    )
    (folder / "lambda.toml").write_text('name = "mixed"\ntimeout = 1\n')
    lambdad.deploy(folder)
    for _ in range(5):
        assert lambdad.http("mixed", "/").status == 200
    for _ in range(2):
        assert lambdad.http("mixed", "/?fail=1").status == 500
    assert lambdad.http("mixed", "/?sleep=5").status == 504
    assert lambdad.cli("invoke", "mixed", "--data", "{}").code == 0
    assert lambdad.http("nobody-here", "/").status == 404  # makes no label

    status, content_type, text = _get(lambdad, "/metrics")
    assert status == 200 and content_type.startswith("text/plain")
    assert _value(text, "lambdad_invocations_total", function="mixed", type="http",
                  code="200") == 5
    assert _value(text, "lambdad_invocations_total", function="mixed", type="http",
                  code="500") == 2
    assert _value(text, "lambdad_invocations_total", function="mixed", type="direct",
                  code="200") == 1
    assert _value(text, "lambdad_invocation_timeouts_total", function="mixed") == 1
    assert _value(text, "lambdad_invocation_errors_total", function="mixed", kind="handler") == 2
    assert _value(text, "lambdad_invocation_duration_seconds_count", function="mixed") == 9
    assert _value(text, "lambdad_deploys_total", kind="deploy", result="success") >= 1
    assert _value(text, "lambdad_image_build_duration_seconds_count") >= 1
    assert _value(text, "lambdad_instance_init_duration_seconds_count", function="mixed") >= 1
    assert _value(text, "lambdad_grpc_requests_total", method="Invoke", code="OK") >= 1
    assert "nobody-here" not in text
    assert 'lambdad_instances{function="mixed",state="idle"}' in text
    assert "request_id" not in text

    health_status, _, body = _get(lambdad, "/healthz")
    assert health_status == 200 and json.loads(body)["status"] == "ok"
    assert _get(lambdad, "/nope")[0] == 404


def test_cold_starts_are_counted(lambdad: Lambdad, tmp_path: Path) -> None:
    import time

    folder = tmp_path / "coldcount"
    folder.mkdir()
    (folder / "handler.py").write_text("def handler(event, context):\n    return 1\n")
    (folder / "lambda.toml").write_text('name = "coldcount"\n[scaling]\nidle_timeout = 1\n')
    lambdad.deploy(folder)
    deadline = time.monotonic() + 20
    while lambdad.containers("coldcount") and time.monotonic() < deadline:
        time.sleep(0.1)
    path = lambdad.http("coldcount").headers["lambda-cold-start"]
    assert path in ("cell", "container")
    assert lambdad.http("coldcount").headers["lambda-cold-start"] == "warm"
    text = _get(lambdad, "/metrics")[2]
    assert _value(text, "lambdad_cold_starts_total", function="coldcount", path=path) == 1
    assert _value(text, "lambdad_stem_cells", state="ready") >= 1  # the pool, by class


def test_stats_summarize_known_traffic_and_survive_a_restart(
    fresh_lambdad: Lambdad, tmp_path: Path
) -> None:
    import signal

    daemon = fresh_lambdad
    folder = tmp_path / "counted"
    folder.mkdir()
    (folder / "handler.py").write_text(
        "import time\n\ndef handler(event, context):\n"
        "    params = event.get('queryStringParameters') or {}\n"
        "    if params.get('fail'):\n        raise ValueError('no')\n"
        "    time.sleep(float(params.get('ms', 0)) / 1000)\n    return 'ok'\n"
    )
    (folder / "lambda.toml").write_text('name = "counted"\ntimeout = 1\n')
    daemon.deploy(folder)
    for ms in (20, 40, 60, 80, 100, 120, 140, 160):
        assert daemon.http("counted", f"/?ms={ms}").status == 200
    assert daemon.http("counted", "/?fail=1").status == 500
    assert daemon.http("counted", "/?ms=3000").status == 504  # the instance is replaced
    assert daemon.http("counted", "/?ms=20").headers["lambda-cold-start"] in ("cell", "container")

    def check() -> None:
        result = daemon.cli("stats", "counted", "-o", "json")
        assert result.code == 0, result.stderr
        (function,) = result.json()
        five = function["windows"][0]
        assert five["window"] == "5m" and five["invocations"] == 11
        assert five["error_rate"] == 2 / 11
        assert five["cold_start_rate"] == 1 / 11
        # The median of the mix is the 6th of 11: 80 or 100 ms (the cold start after the
        # timeout is below or above 100 ms, a cell or a container) plus lambdad's overhead,
        # which a loaded CI machine stretches; a mean would be above 160 ms.
        assert 60 < five["p50_ms"] < 150
        assert five["p99_ms"] > 900  # the timed-out request
        assert five["instances_max"] >= 1

    check()
    table = daemon.cli("stats").stdout
    assert "counted" in table and "5m" in table and "1d" in table
    daemon.stop(signal.SIGTERM)  # flushes the last minute
    daemon.start()
    check()


def test_a_follower_that_leaves_is_let_go(lambdad: Lambdad, tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    from tests.support.daemon import ROOT

    folder = tmp_path / "watched"
    folder.mkdir()
    (folder / "handler.py").write_text("def handler(event, context):\n    return 1\n")
    lambdad.deploy(folder, "--name", "watched")
    followers = [subprocess.Popen(
        [sys.executable, "-m", "lambdactl", "logs", "watched", "-f"], env=lambdad.env(),
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(3)]
    deadline = time.monotonic() + 15
    while _value(_get(lambdad, "/metrics")[2], "lambdad_log_followers") < 3:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    for follower in followers:
        follower.send_signal(signal.SIGINT)
        follower.wait(timeout=10)
    while _value(_get(lambdad, "/metrics")[2], "lambdad_log_followers") > 0:
        assert time.monotonic() < deadline + 15, "a departed follower is still subscribed"
        time.sleep(0.1)
