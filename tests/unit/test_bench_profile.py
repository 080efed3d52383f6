"""The bench's CPU accounting and profile breakdown (bench/loadgen.py, bench/cpuprofile.py):
pure logic, so the figures docs/performance.md quotes come from code that is tested."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import cpuprofile
import loadgen

SITE = "/work/.venv/lib/python3.11/site-packages"
STDLIB = "/usr/lib/python3.11"
SRC = "/work/lambda/lambdad"


def stack(*frames: tuple[str, str]) -> list[cpuprofile.Frame]:
    return [cpuprofile.Frame(function, path) for function, path in frames]


LOOP = ("_run_once", f"{STDLIB}/asyncio/base_events.py")
STEP = ("__step", f"{STDLIB}/asyncio/tasks.py")


@pytest.mark.parametrize(("frames", "area"), [
    # h11 belongs to whoever called it
    ([LOOP, STEP, ("serve", f"{SRC}/gateway/client.py"),
      ("next_action", f"{SRC}/gateway/connection.py"),
      ("next_event", f"{SITE}/h11/_connection.py")], cpuprofile.H11_CLIENT),
    ([LOOP, STEP, ("invoke", f"{SRC}/runtime/forward.py"),
      ("request", f"{SRC}/runtime/upstream.py"),
      ("send", f"{SITE}/h11/_connection.py")], cpuprofile.HOP),
    ([LOOP, STEP, ("follow", f"{SRC}/logs/docker_stream.py"),
      ("next_event", f"{SITE}/h11/_connection.py")], cpuprofile.CAPTURE),
    # the hop's parser (issue 16): llhttp is C, so its time shows in hop.py's frames
    ([LOOP, ("_read_ready", f"{STDLIB}/asyncio/selector_events.py"),
      ("data_received", f"{SRC}/runtime/upstream.py"),
      ("on_header", f"{SRC}/runtime/hop.py")], cpuprofile.HOP),
    # asyncio: its own areas, except under the log stream's reader
    ([LOOP, ("_read_ready", f"{STDLIB}/asyncio/selector_events.py"),
      ("feed_data", f"{STDLIB}/asyncio/streams.py")], cpuprofile.ASYNCIO_STREAMS),
    ([LOOP, ("select", f"{STDLIB}/selectors.py")], cpuprofile.ASYNCIO_TRANSPORT),
    ([LOOP], cpuprofile.ASYNCIO_LOOP),
    ([LOOP, STEP, ("follow", f"{SRC}/logs/docker_stream.py"),
      ("read", f"{STDLIB}/asyncio/streams.py")], cpuprofile.CAPTURE),
    # other libraries are charged to the lambdad module that called them
    ([LOOP, STEP, ("_begin", f"{SRC}/gateway/connection.py"),
      ("uuid4", f"{STDLIB}/uuid.py")], cpuprofile.GATEWAY),
    ([LOOP, STEP, ("invoke", f"{SRC}/control/invoke.py"),
      ("invocation", f"{SRC}/metrics/registry.py"),
      ("observe", f"{SITE}/prometheus_client/metrics.py")], cpuprofile.INVOKE),
    ([LOOP, STEP, ("invoke", f"{SRC}/control/invoke.py"),
      ("inc", f"{SITE}/prometheus_client/values.py")], cpuprofile.INVOKE),
    ([LOOP, STEP, ("acquire", f"{SRC}/runtime/pool.py")], cpuprofile.FORWARD),
    ([LOOP, STEP, ("_end_request", f"{SRC}/gateway/connection.py"),
      ("debug", f"{STDLIB}/logging/__init__.py")], cpuprofile.LOGGING),
    ([LOOP, ("on_line", f"{SRC}/logs/capture.py"),
      ("loads", f"{STDLIB}/json/__init__.py")], cpuprofile.CAPTURE),
    ([("run", f"{STDLIB}/threading.py"), ("_serve", f"{SITE}/grpc/_server.py")],
     cpuprofile.OTHER),
    ([LOOP, STEP, ("flush", f"{SRC}/store/store.py")], cpuprofile.OTHER_LAMBDAD),
    # threads blocked in C that py-spy caught runnable: left out of the CPU samples
    ([LOOP, ("EpollSelector.select", f"{STDLIB}/selectors.py")], cpuprofile.IDLE),
    ([("Thread.run", f"{STDLIB}/threading.py"),
      ("_worker", f"{STDLIB}/concurrent/futures/thread.py")], cpuprofile.IDLE),
    ([("Thread.run", f"{STDLIB}/threading.py")], cpuprofile.IDLE),
    ([("Thread.run", f"{STDLIB}/threading.py"),
      ("StoreThread._serve", f"{SRC}/store/thread.py")], cpuprofile.IDLE),
    ([("Thread.run", f"{STDLIB}/threading.py"),
      ("StoreThread._serve", f"{SRC}/store/thread.py"),
      ("cycle", f"{SRC}/queue/store.py")], cpuprofile.OTHER_LAMBDAD),
    ([("Thread.run", f"{STDLIB}/threading.py"), ("watch_exits", f"{SRC}/runtime/docker.py"),
      ("SocketIO.readinto", f"{STDLIB}/socket.py")], cpuprofile.IDLE),
    ([LOOP, STEP, ("SocketIO.readinto", f"{STDLIB}/socket.py")], cpuprofile.ASYNCIO_TRANSPORT),
])
def test_classify_charges_each_sample_to_one_area(
        frames: list[cpuprofile.Frame], area: str) -> None:
    assert cpuprofile.classify(stack(*frames)) == area


def test_parse_raw_and_breakdown_count_samples_and_drop_thread_roots() -> None:
    raw = [
        f"thread (0x7F01);_run_once ({STDLIB}/asyncio/base_events.py:1);"
        f"next_event ({SITE}/h11/_connection.py:2) 7",
        f"thread (0x7F01);_run_once ({STDLIB}/asyncio/base_events.py:1);"
        f"request ({SRC}/runtime/upstream.py:3) 3",
        "",
    ]
    stacks = cpuprofile.parse_raw(raw)
    assert [count for _, count in stacks] == [7, 3]
    result = cpuprofile.breakdown(stacks)
    assert result.samples == 10
    assert result.areas[cpuprofile.H11_CLIENT] == 7
    assert result.areas[cpuprofile.HOP] == 3
    assert result.self_time["h11/_connection.py:next_event"] == 7
    assert result.inclusive["lambdad/runtime/upstream.py:request"] == 3
    assert not any("thread" in name for name in result.self_time | result.inclusive)
    assert cpuprofile.parse_frame("thread (0x7F01)") == cpuprofile.Frame("thread", "")
    table = cpuprofile.render(result, 200.0, top=5)
    assert "140.0" in table  # 7 of 10 samples of 200 us
    assert "60.0" in table


def test_proc_cpu_s_reads_this_process_cpu_time() -> None:
    before = loadgen.proc_cpu_s(os.getpid())
    assert before is not None
    end = time.process_time() + 0.05
    while time.process_time() < end:
        pass
    after = loadgen.proc_cpu_s(os.getpid())
    assert after is not None and after - before >= 0.03
    assert loadgen.proc_cpu_s(2**22 + 1) is None  # past pid_max: no such process


def test_load_result_cpu_per_request() -> None:
    fields = {"connections": 1, "requests": 2000, "errors": 0, "window_s": 2.0, "rps": 1000.0,
              "p50_ms": 0.5, "p99_ms": 1.0, "mean_ms": 0.6, "cpu_pct": 20.0}
    older = loadgen.LoadResult.from_json(fields)  # a result without the field still reads
    assert older.pid_cpu_s is None and older.pid_cpu_us_per_request is None
    watched = loadgen.LoadResult.from_json({**fields, "pid_cpu_s": 0.5})
    assert watched.pid_cpu_us_per_request == pytest.approx(250.0)
