"""lambdactl.render and the commands' pure formatters, in memory (no daemon, no gRPC)."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from rich.console import Console

from lambdactl import render
from lambdactl.commands import admin, functions, invoke
from lambdad.api.v1 import functions_pb2 as pb

# 2025-11-26T17:40:00.123456789Z
SECONDS = 1_764_178_800
NANOS = 123_456_789


@pytest.fixture
def berlin(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Local time is Europe/Berlin (UTC+1 in November), so local differs from UTC."""
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_unset_timestamp_is_never() -> None:
    unset = Timestamp()
    assert render.is_unset(unset)
    assert render.local_time(unset) == "-"
    assert render.rfc3339(unset) is None
    assert not render.is_unset(Timestamp(nanos=1))


def test_rfc3339_is_utc_with_z() -> None:
    ts = Timestamp(seconds=SECONDS, nanos=NANOS)
    assert render.rfc3339(ts) == "2025-11-26T17:40:00Z"
    assert render.rfc3339(ts, "milliseconds") == "2025-11-26T17:40:00.123Z"


def test_local_time_is_in_the_local_zone(berlin: None) -> None:
    ts = Timestamp(seconds=SECONDS, nanos=NANOS)
    assert render.local_time(ts) == "2025-11-26 18:40:00"
    assert render.to_datetime(ts).utcoffset() is not None  # aware, never naive


def test_log_line_has_local_milliseconds_and_short_ids(berlin: None) -> None:
    entry = pb.LogEntry(time=Timestamp(seconds=SECONDS, nanos=NANOS), version=4,
                        request_id="0b5e8a1c-aaaa", stream="runtime", message="START")
    assert invoke.log_line(entry) == "2025-11-26 18:40:00.123 v4 0b5e8a1c  rt START"
    entry = pb.LogEntry(time=Timestamp(seconds=SECONDS), stream="custom", message="x")
    assert invoke.log_line(entry) == "2025-11-26 18:40:00.000 v0 - cus x"
    assert '"logged_at": "2025-11-26T17:40:00.000Z"' in invoke.log_json(entry)


def test_sizes_plurals_and_milliseconds() -> None:
    assert render.size(0) == "0.0 KiB"
    assert render.size(1536) == "1.5 KiB"
    assert render.size(5 * render.MIB) == "5.0 MiB"
    assert render.size(3 * 1024 * render.MIB) == "3.0 GiB"
    assert render.plural(1, "version") == "1 version"
    assert render.plural(0, "version") == "0 versions"
    assert render.ms(0.0) == "-"
    assert render.ms(0.01234) == "12.3"
    assert render.ms_json(0.0123456) == 12.346
    assert [render.plain(v) for v in (None, True, False, "x", 3)] == ["-", "yes", "no", "x", "3"]


def test_reply_json_or_text() -> None:
    assert render.parse_reply(b'{"a": 1}') == (True, {"a": 1})
    assert render.parse_reply(b"not json") == (False, None)
    assert render.json_or_text(b"[1]") == [1]
    assert render.json_or_text(b"\xff plain") == "\ufffd plain"
    # a hostile reply nested without end is text, not a crash
    deep = b"[" * 100_000 + b"]" * 100_000
    assert render.parse_reply(deep)[0] is False


def test_table_keeps_every_column_on_a_narrow_console() -> None:
    """Scripts grep tables: a narrow terminal must not drop, wrap or cut a column."""
    stream = io.StringIO()
    out = Console(file=stream, width=20, color_system=None)
    t = render.table("NAME", "URL", "COUNT", right=("COUNT",))
    url = "http://a-rather-long-function-name.localhost:8080/"
    t.add_row("a-rather-long-function-name", url, "7")
    t.add_row("b", "-", "12")
    render.print_table(out, t)
    lines = stream.getvalue().splitlines()
    assert lines[0].split() == ["NAME", "URL", "COUNT"]
    assert url in lines[1]
    assert lines[1].endswith(" 7") and lines[2].endswith("12")  # right-justified
    assert out.width == 20  # restored


def test_fields_pad_keys() -> None:
    stream = io.StringIO()
    render.print_fields(Console(file=stream, width=80, color_system=None),
                        [("Name", "f"), ("Env", "")], 8)
    assert stream.getvalue() == "Name:   f\nEnv:    -\n"


def test_step_view_plain_lines() -> None:
    stream = io.StringIO()
    view = render.StepView(Console(file=stream, width=80, color_system=None))
    view.start(1, 3, "Packaging function code")
    view.done()
    view.start(2, 3, "Building image")
    view.output("Step 1/4\n")
    view.done()
    view.start(3, 3, "Starting")
    view.close()
    assert stream.getvalue() == (
        "[1/3] Packaging function code... Done.\n"
        "[2/3] Building image...\n"
        " Step 1/4\n"
        "[3/3] Starting...\n"
    )


def test_console_on_injected_stream_is_plain_and_fixed_width() -> None:
    out = render.console(io.StringIO(), io.StringIO())
    assert out.width == render.TEST_WIDTH and out.color_system is None


def test_function_json_and_rows() -> None:
    fn = pb.Function(name="f", version=2, status=pb.FUNCTION_STATUS_IDLE, url="u",
                     image="img", code_size=2048, code_sha256="ab")
    fn.config.memory_mb = 128
    fn.config.env["B"] = "2"
    fn.config.env["A"] = "1"
    obj = functions.function_json(fn, detail=True)
    assert obj["status"] == "idle" and obj["deployed_at"] is None
    assert obj["config"]["memory_bytes"] == 128 * render.MIB
    assert list(obj["config"]["env"]) == ["A", "B"]
    rows = dict(functions.function_rows(fn))
    assert rows["Deployed at"] == "-" and rows["Env"] == "A=1, B=2"
    assert rows["Code size"] == "2.0 KiB (2048 bytes)"
    assert functions.function_json(pb.Function(status=99), detail=False)["status"] == "unknown"


def test_schedule_result_column() -> None:
    s = pb.ScheduleInfo(last_result="ok", last_invocation_status="succeeded")
    assert admin.schedule_result(s) == "ok (succeeded)"
    s = pb.ScheduleInfo(last_result="skipped", last_invocation_status="running")
    assert admin.schedule_result(s) == "skipped"
    assert admin.schedule_result(pb.ScheduleInfo()) == "-"
    assert admin.schedule_json(pb.ScheduleInfo())["data"] == {}
