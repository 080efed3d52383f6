"""lambdactl entry point: run one subcommand, map every expected failure to an exit code.

Data goes to stdout (text, or JSON with `-o json`); progress, messages and errors
go to stderr, so `lambdactl invoke f > out.json` captures only the payload.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import grpc
from rich.console import Console
from rich.table import Table
from rich.text import Text

from lambdactl import contexts, package
from lambdactl.client import Client, error_from_rpc
from lambdactl.contexts import Context
from lambdactl.exitcodes import CliError, ExitCode
from lambdactl.parser import build_parser, client_version
from lambdactl.target import Target, check_host, resolve_target
from lambdad.api.v1 import functions_pb2 as pb
from lambdad.errors import InvalidArgument
from lambdad.jsontext import parse_json

DEPLOY_STEPS = 3  # 1 is the CLI's (package + upload); the daemon reports 2 and 3
TEST_WIDTH = 120  # width of consoles built on injected streams
MIB = 1024 * 1024

STATUS_NAMES = {
    pb.FUNCTION_STATUS_READY: "ready",
    pb.FUNCTION_STATUS_IDLE: "idle",
    pb.FUNCTION_STATUS_DEPLOYING: "deploying",
}


class Ctx:
    """What every command needs: parsed args, the two consoles, stdin, the target."""

    def __init__(self, args: argparse.Namespace, out: Console, err: Console, stdin: TextIO) -> None:
        self.args = args
        self.out = out
        self.err = err
        self.stdin = stdin
        self.json = args.output == "json"
        self._target: Target | None = None

    @property
    def target(self) -> Target:
        if self._target is None:
            args = self.args
            self._target = resolve_target(args.host, args.api_key_file, os.environ,
                                          context=args.context, tls_ca=args.tls_ca)
        return self._target

    def message(self, text: str) -> None:
        self.err.print(text, markup=False, highlight=False, soft_wrap=True)

    def error(self, message: str) -> None:
        """`error: ...` on stderr; the word is red on a terminal (unless NO_COLOR)."""
        first, *rest = message.splitlines() or [""]
        self.err.print(Text.assemble(("error:", "bold red"), f" {first}"), soft_wrap=True,
                       highlight=False)
        for line in rest:
            self.message(f"  {line}")

    def write_json(self, value: object) -> None:
        self.out.file.write(json.dumps(value, indent=2) + "\n")
        self.out.file.flush()

    def write_bytes(self, data: bytes) -> None:
        """Raw bytes on stdout; text streams without a buffer get UTF-8 text."""
        stream = self.out.file
        buffer = getattr(stream, "buffer", None)
        if buffer is None:
            stream.write(data.decode("utf-8", "replace") + "\n")
        else:
            stream.flush()
            buffer.write(data + b"\n")
            buffer.flush()


class StepView:
    """`[n/N] title... Done.` lines; on a terminal a spinner runs while a step works."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live = console.is_terminal
        self.step = 0
        self.header: str | None = None  # printed lazily on a terminal
        self.line_open = False  # plain mode: header printed without its newline
        self.status: Any = None

    def start(self, step: int, total: int, title: str) -> None:
        self.close()
        self.step = step
        header = f"[{step}/{total}] {title}..."
        if self.live:
            self.header = header
            self.status = self.console.status(Text(header), spinner="dots")
            self.status.start()
        else:
            self.console.print(header, end="", markup=False, highlight=False, soft_wrap=True)
            self.line_open = True

    def output(self, line: str) -> None:
        self._flush_header()
        self.console.print(Text(" " + line.rstrip("\r\n"), style="dim"), soft_wrap=True)

    def done(self) -> None:
        self._stop_status()
        if self.header is not None:
            self.console.print(
                f"{self.header} Done.", markup=False, highlight=False, soft_wrap=True
            )
            self.header = None
        elif self.line_open:
            self.console.print(" Done.", markup=False, highlight=False)
            self.line_open = False
        self.step = 0

    def close(self) -> None:
        """End whatever is on screen, e.g. before an error line."""
        self._flush_header()
        self._stop_status()

    def _flush_header(self) -> None:
        if self.header is not None:
            self.console.print(self.header, markup=False, highlight=False, soft_wrap=True)
            self.header = None
        if self.line_open:
            self.console.print()
            self.line_open = False

    def _stop_status(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None


# Deploy flag -> ConfigOverrides field; a flag left out keeps what lambda.toml says.
_OVERRIDE_FIELDS = {
    "handler": "handler",
    "timeout": "timeout_seconds",
    "memory": "memory_mb",
    "network": "network",
    "cpu": "cpu",
    "concurrency": "concurrency",
    "min_instances": "min_instances",
    "max_instances": "max_instances",
    "idle_timeout": "idle_timeout_seconds",
}


def _overrides(args: argparse.Namespace) -> pb.ConfigOverrides:
    overrides = pb.ConfigOverrides(env=dict(args.env))
    for flag, field in _OVERRIDE_FIELDS.items():
        value = getattr(args, flag)
        if value is not None:
            setattr(overrides, field, value)
    return overrides


def _stream_deploy(
    ctx: Ctx, view: StepView, target: Target, name: str, root: Path
) -> pb.DeployResult | None:
    """Upload the package and render the daemon's progress; returns its result."""
    code = package.pack(root)
    header = pb.DeployHeader(
        name=name, size=code.size, sha256=code.sha256, overrides=_overrides(ctx.args),
        no_cache=ctx.args.no_cache,
    )
    result: pb.DeployResult | None = None
    saw_output = False
    with code.file, Client(target) as client:
        call = client.deploy(header, code.file)
        try:
            for reply in call:
                if view.step == 1:
                    view.done()  # the daemon answers once it has the whole upload
                kind = reply.WhichOneof("kind")
                if kind == "progress":
                    p = reply.progress
                    if p.state == pb.DeployProgress.STATE_STARTED:
                        view.start(p.step, p.total_steps, p.title)
                    elif p.state == pb.DeployProgress.STATE_DONE and view.step == p.step:
                        view.done()
                elif kind == "build_output":
                    saw_output = True
                    view.output(reply.build_output)
                elif kind == "result":
                    result = reply.result
        except grpc.RpcError as exc:
            error = error_from_rpc(exc, target)
            if saw_output and error.code is ExitCode.BUILD_FAILED:
                error.message = error.message.splitlines()[0]  # the lines were just shown
            raise error from None
        except KeyboardInterrupt:
            call.cancel()
            raise
    return result


def cmd_deploy(ctx: Ctx) -> int:
    root = Path(ctx.args.path)
    if not root.is_dir():
        raise CliError(f"{root} is not a folder", ExitCode.INVALID)
    name = package.function_name(root, ctx.args.name)
    target = ctx.target  # fail fast, before packaging, when the daemon is not there
    view = StepView(ctx.err)
    view.start(1, DEPLOY_STEPS, "Packaging function code")
    try:
        result = _stream_deploy(ctx, view, target, name, root)
    finally:
        view.close()  # an error line must start on a fresh line
    if result is None:
        raise CliError("lambdad ended the deploy without a result")
    if ctx.json:
        ctx.write_json(
            {
                "name": result.name,
                "version": result.version,
                "image": result.image,
                "url": result.url,
            }
        )
    ctx.message(f"Your function is live at: {result.url}")
    return ExitCode.OK


def _read_payload(ctx: Ctx) -> bytes:
    """The invoke payload, checked to be JSON before anything is sent."""
    args = ctx.args
    if args.data_file is not None:
        source = "stdin" if args.data_file == "-" else args.data_file
        try:
            if args.data_file == "-":
                stream = getattr(ctx.stdin, "buffer", None)
                data = stream.read() if stream is not None else ctx.stdin.read().encode()
            else:
                data = Path(args.data_file).read_bytes()
        except OSError as exc:
            raise CliError(f"cannot read {source}: {exc.strerror}", ExitCode.INVALID) from None
    else:
        source = "--data"
        data = (args.data if args.data is not None else "{}").encode()
    try:
        parse_json(data, source)
    except InvalidArgument as exc:
        raise CliError(exc.message, ExitCode.INVALID) from None
    return data


def _parse_json(data: bytes) -> tuple[bool, Any]:
    """A function's reply as JSON if it is (a hostile one may nest without end)."""
    try:
        return True, parse_json(data, "the reply")
    except InvalidArgument:
        return False, None


def _json_or_text(data: bytes) -> Any:
    """A payload in JSON output: the JSON value itself, else its text."""
    is_json, value = _parse_json(data)
    return value if is_json else data.decode("utf-8", "replace")


def cmd_invoke(ctx: Ctx) -> int:
    payload = _read_payload(ctx)
    if ctx.args.event:
        with Client(ctx.target) as client:
            queued = client.invoke(ctx.args.name, payload, event=True)
        if ctx.json:
            ctx.write_json({"id": queued.request_id, "function": ctx.args.name,
                            "status": "queued"})
        else:
            ctx.out.file.write(queued.request_id + "\n")
            ctx.message("Queued; follow it with: lambdactl invocation " + queued.request_id[:8])
        return ExitCode.OK
    with Client(ctx.target) as client:
        reply = client.invoke(ctx.args.name, payload, ctx.args.pinned_version or 0)
    is_json, value = _parse_json(reply.payload)
    if ctx.json:
        ctx.write_json(
            {
                "function": ctx.args.name,
                "version": reply.executed_version,
                "request_id": reply.request_id,
                "status_code": reply.status_code,
                "payload": value if is_json else reply.payload.decode("utf-8", "replace"),
                "function_error": reply.function_error or None,
                "cold_start": reply.cold_start,
            }
        )
    elif is_json and ctx.out.is_terminal:
        ctx.out.print_json(data=value)
    else:
        ctx.write_bytes(reply.payload)
    if ctx.args.log:
        _print_invocation_log(ctx, reply.request_id)
    if reply.function_error:
        kind, text = reply.function_error, reply.payload.decode("utf-8", "replace")
        if is_json and isinstance(value, dict):
            kind = str(value.get("errorType") or kind)
            text = str(value.get("errorMessage", text))
        ctx.error(f"function raised {kind}: {text}")
        return ExitCode.FAILURE
    return ExitCode.OK


def _timestamp(fn: pb.Function) -> datetime | None:
    ts = fn.deployed_at
    if not fn.HasField("deployed_at") or (ts.seconds == 0 and ts.nanos == 0):
        return None
    return datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, UTC)


def _local_time(fn: pb.Function) -> str:
    when = _timestamp(fn)
    return when.astimezone().strftime("%Y-%m-%d %H:%M:%S") if when else "-"


def _rfc3339(fn: pb.Function) -> str | None:
    when = _timestamp(fn)
    return when.isoformat(timespec="seconds").replace("+00:00", "Z") if when else None


def _status(fn: pb.Function) -> str:
    return STATUS_NAMES.get(fn.status, "unknown")


def _function_json(fn: pb.Function, *, detail: bool) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "name": fn.name,
        "version": fn.version,
        "status": _status(fn),
        "url": fn.url,
        "deployed_at": _rfc3339(fn),
        "image": fn.image,
    }
    if detail:
        cfg = fn.config
        obj["config"] = {
            "runtime": cfg.runtime,
            "handler": cfg.handler,
            "timeout_ms": cfg.timeout_seconds * 1000.0,
            "memory_bytes": cfg.memory_mb * MIB,
            "cpu": cfg.cpu,
            "pids_limit": cfg.pids_limit,
            "network": cfg.network,
            "env": {key: cfg.env[key] for key in sorted(cfg.env)},
            "scaling": {
                "concurrency": cfg.scaling.concurrency,
                "min_instances": cfg.scaling.min_instances,
                "max_instances": cfg.scaling.max_instances,
                "idle_timeout_ms": cfg.scaling.idle_timeout_seconds * 1000.0,
                "queue_timeout_ms": cfg.scaling.queue_timeout_seconds * 1000.0,
            },
        }
        obj["code_sha256"] = fn.code_sha256
        obj["code_size_bytes"] = fn.code_size
        counts = fn.instances
        obj["instances"] = {
            "running": counts.running, "busy": counts.busy, "starting": counts.starting,
            "draining": counts.draining, "queued": counts.queued,
        }
    return obj


def _print_table(ctx: Ctx, table: Table) -> None:
    """Every table at its natural width: never drop or truncate columns to fit the
    terminal, because scripts grep this output."""
    console = ctx.out
    saved = console.width
    console.width = max(
        saved, console.measure(table, options=console.options.update_width(10_000)).maximum
    )
    try:
        console.print(table, crop=False)
    finally:
        console.width = saved


def cmd_list(ctx: Ctx) -> int:
    with Client(ctx.target) as client:
        functions = sorted(client.list_functions(), key=lambda f: f.name)
    if ctx.json:
        ctx.write_json([_function_json(fn, detail=False) for fn in functions])
        return ExitCode.OK
    if not functions:
        ctx.message("No functions deployed.")
        return ExitCode.OK
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("NAME", "VERSION", "STATUS", "URL", "DEPLOYED AT"):
        table.add_column(column, no_wrap=True)
    for fn in functions:
        table.add_row(fn.name, str(fn.version), _status(fn), fn.url, _local_time(fn))
    _print_table(ctx, table)
    return ExitCode.OK


def _size(n: int) -> str:
    value = float(n)
    for unit in ("KiB", "MiB"):
        value /= 1024
        if value < 1024:
            return f"{value:.1f} {unit}"
    return f"{value / 1024:.1f} GiB"


def cmd_get(ctx: Ctx) -> int:
    with Client(ctx.target) as client:
        fn = client.get_function(ctx.args.name, show_env=ctx.args.show_env)
    if ctx.json:
        ctx.write_json(_function_json(fn, detail=True))
        return ExitCode.OK
    cfg = fn.config
    scaling = cfg.scaling
    counts = fn.instances
    env = ", ".join(f"{key}={cfg.env[key]}" for key in sorted(cfg.env)) or "-"
    rows = [
        ("Name", fn.name),
        ("Version", str(fn.version)),
        ("Status", _status(fn)),
        ("URL", fn.url),
        ("Deployed at", _local_time(fn)),
        ("Image", fn.image),
        ("Runtime", cfg.runtime),
        ("Handler", cfg.handler),
        ("Timeout", f"{cfg.timeout_seconds}s"),
        ("Memory", f"{cfg.memory_mb} MiB"),
        ("CPU", f"{cfg.cpu:g} core(s)"),
        ("Pids limit", str(cfg.pids_limit)),
        ("Network", cfg.network),
        ("Concurrency", f"{scaling.concurrency} request(s) per instance"),
        ("Instances", f"min {scaling.min_instances}, max {scaling.max_instances}, "
                      f"idle timeout {scaling.idle_timeout_seconds}s, "
                      f"queue timeout {scaling.queue_timeout_seconds}s"),
        ("Running", f"{counts.running} ({counts.busy} busy, {counts.starting} starting, "
                    f"{counts.draining} draining, {counts.queued} queued)"),
        ("Env", env),
        ("Code SHA256", fn.code_sha256),
        ("Code size", f"{_size(fn.code_size)} ({fn.code_size} bytes)"),
    ]
    pad = max(len(key) for key, _ in rows) + 3
    for key, value in rows:
        line = Text.assemble((f"{key}:".ljust(pad), "bold"), value or "-")
        ctx.out.print(line, soft_wrap=True)
    return ExitCode.OK


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def cmd_delete(ctx: Ctx) -> int:
    name = ctx.args.name
    interactive = ctx.stdin.isatty() and ctx.err.is_terminal
    if interactive and not ctx.args.yes:
        ctx.err.print(
            f'Delete function "{name}" with all its versions and instances? [y/N] ',
            end="",
            markup=False,
            highlight=False,
        )
        if ctx.stdin.readline().strip().lower() not in ("y", "yes"):
            raise CliError("aborted; nothing was deleted")
    with Client(ctx.target) as client:
        reply = client.delete_function(name)
    if ctx.json:
        ctx.write_json(
            {
                "name": reply.name,
                "versions_removed": reply.versions_removed,
                "instances_removed": reply.instances_removed,
            }
        )
    ctx.message(
        f'Deleted function "{reply.name or name}" ({_plural(reply.versions_removed, "version")}, '
        f"{_plural(reply.instances_removed, 'instance')})."
    )
    return ExitCode.OK


def _when(ts: Any) -> str:
    if ts.seconds == 0 and ts.nanos == 0:
        return "-"
    when = datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, UTC)
    return when.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _rfc(ts: Any, timespec: str = "seconds") -> str | None:
    """A protobuf Timestamp as RFC 3339 UTC (`2025-11-26T17:40:00Z`); unset is None."""
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    when = datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, UTC)
    return when.isoformat(timespec=timespec).replace("+00:00", "Z")


def _ms_json(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


_STREAMS = {"stdout": "out", "stderr": "err", "runtime": "rt"}  # rt: the runtime's frames
# A function's text must not steer the terminal: a carriage return or an escape sequence
# could overwrite the time, request and stream columns with its own (C0 but tab, DEL, C1,
# line separators and bidi controls are shown escaped).
_UNPRINTABLE = {c: f"\\x{c:02x}" for c in (*range(0x09), *range(0x0A, 0x20), 0x7F,
                                            *range(0x80, 0xA0))}
_UNPRINTABLE.update({c: f"\\u{c:04x}" for c in (0x2028, 0x2029, *range(0x202A, 0x202F),
                                                  *range(0x2066, 0x206A))})


def printable(text: str) -> str:
    return text.translate(_UNPRINTABLE)


def _log_line(entry: pb.LogEntry) -> str:
    when = datetime.fromtimestamp(entry.time.seconds + entry.time.nanos / 1e9, UTC)
    stamp = when.astimezone().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    request = entry.request_id[:8] if entry.request_id else "-"
    stream = _STREAMS.get(entry.stream, entry.stream[:3])
    return f"{stamp} v{entry.version} {request} {stream:>3} {printable(entry.message)}"


def _log_json(entry: pb.LogEntry) -> str:
    return json.dumps({
        "logged_at": _rfc(entry.time, "milliseconds"), "function": entry.function,
        "version": entry.version, "instance": entry.instance, "stream": entry.stream,
        "request_id": entry.request_id or None, "message": entry.message,
    })


def _print_invocation_log(ctx: Ctx, request_id: str) -> None:
    """As `aws lambda invoke --log-type Tail`: the lines of this invocation, on stderr.

    Docker delivers an instance's output a moment after the response, so this waits
    (briefly) for the invocation's REPORT line."""
    request = pb.LogsRequest(name=ctx.args.name, request_id=request_id)
    entries: list[pb.LogEntry] = []
    deadline = time.monotonic() + 3.0
    with Client(ctx.target) as client:
        while time.monotonic() < deadline:
            entries = list(client.logs(request))
            if any(e.stream == "runtime" and e.message.startswith("REPORT ")
                   for e in entries):
                # stderr is read separately from stdout: give its last lines a moment
                time.sleep(0.2)
                entries = list(client.logs(request))
                break
            time.sleep(0.1)
    for entry in entries:
        ctx.err.print(printable(entry.message), markup=False, highlight=False, soft_wrap=True)


def cmd_logs(ctx: Ctx) -> int:
    args = ctx.args
    request = pb.LogsRequest(
        name=args.name, follow=args.follow, since_seconds=args.since or 0, tail=args.tail or 0,
        request_id=args.request_id or "", version=args.log_version or 0,
    )
    with Client(ctx.target) as client:
        stream = client.logs(request)
        try:
            for entry in stream:
                if ctx.json:
                    ctx.out.file.write(_log_json(entry) + "\n")
                else:
                    ctx.out.file.write(_log_line(entry) + "\n")
                ctx.out.file.flush()
        except KeyboardInterrupt:
            stream.cancel()
            return ExitCode.INTERRUPTED
    return ExitCode.OK


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}" if seconds else "-"


def _cells_json(c: pb.CellPoolClass) -> dict[str, object]:
    return {"resource_class": c.resource_class, "ready": c.ready, "starting": c.starting,
            "memory_bytes": c.memory_bytes}


def _print_cells(ctx: Ctx, cells: list[pb.CellPoolClass]) -> None:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("STEM CELLS (CLASS)", "READY", "STARTING", "MEMORY"):
        table.add_column(column, no_wrap=True, justify="left" if column.startswith("STEM")
                         else "right")
    for c in cells:
        table.add_row(c.resource_class, str(c.ready), str(c.starting), _size(c.memory_bytes))
    if len(cells) > 1:
        table.add_row("total", str(sum(c.ready for c in cells)),
                      str(sum(c.starting for c in cells)),
                      _size(sum(c.memory_bytes for c in cells)))
    _print_table(ctx, table)


def cmd_stats(ctx: Ctx) -> int:
    with Client(ctx.target) as client:
        functions, cells = client.stats(ctx.args.name)
    if ctx.args.cells:
        if ctx.json:
            ctx.write_json([_cells_json(c) for c in cells])
        elif cells:
            _print_cells(ctx, cells)
        else:
            ctx.err.print("No stem cells: no standard-runtime function is routed, or "
                          "cell_pool_size is 0.")
        return ExitCode.OK
    if ctx.json:
        ctx.write_json([
            {"name": f.name, "instances_now": f.instances_now, "memory_bytes": f.memory_bytes,
             "windows": [
                {"window": w.window, "invocations": w.invocations, "error_rate": w.error_rate,
                 "p50_ms": _ms_json(w.p50_seconds), "p95_ms": _ms_json(w.p95_seconds),
                 "p99_ms": _ms_json(w.p99_seconds), "cold_start_rate": w.cold_start_rate,
                 "instances_max": w.instances_max}
                for w in f.windows]}
            for f in functions
        ])
        return ExitCode.OK
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("FUNCTION", "WINDOW", "INVOCATIONS", "ERRORS", "P50 MS", "P95 MS",
                   "P99 MS", "COLD", "INSTANCES", "MEMORY"):
        table.add_column(column, no_wrap=True, justify="left" if column in (
            "FUNCTION", "WINDOW") else "right")
    for f in functions:
        for i, w in enumerate(f.windows):
            now = i == 0  # instances and memory now, on the function's first line
            table.add_row(f.name, w.window, str(w.invocations), f"{w.error_rate:.1%}",
                          _ms(w.p50_seconds), _ms(w.p95_seconds), _ms(w.p99_seconds),
                          f"{w.cold_start_rate:.1%}",
                          f"{f.instances_now} now, max {w.instances_max}" if now
                          else f"max {w.instances_max}",
                          _size(f.memory_bytes) if now else "")
    _print_table(ctx, table)
    if cells:
        _print_cells(ctx, cells)
    return ExitCode.OK


def _invocation_json(i: pb.InvocationInfo) -> dict[str, object]:
    return {
        "id": i.id, "function": i.function, "status": i.status, "attempts": i.attempts,
        "source": i.source, "created_at": _rfc(i.created_at),
        "next_attempt_at": _rfc(i.next_attempt_at) if i.status == "queued" else None,
        "started_at": _rfc(i.started_at), "finished_at": _rfc(i.finished_at),
        "status_code": i.status_code or None,
        "payload": _json_or_text(i.payload),
        "result": _json_or_text(i.result) if i.result else None,
        "last_error": i.last_error or None,
    }


def _key_json(k: pb.KeyInfo) -> dict[str, object]:
    return {"id": k.id, "name": k.name, "role": k.role, "created_at": _rfc(k.created_at),
            "revoked_at": _rfc(k.revoked_at)}


def cmd_keys(ctx: Ctx) -> int:
    action = ctx.args.keys_command
    with Client(ctx.target) as client:
        if action == "create":
            created = client.create_key(ctx.args.name, ctx.args.role)
            if ctx.json:
                ctx.write_json({**_key_json(created.key), "secret": created.secret})
            else:
                ctx.out.file.write(created.secret + "\n")
                ctx.message(f'Created {created.key.role} key "{created.key.name}" '
                            f"(id {created.key.id}). Store the secret now: it is not shown "
                            "again.")
            return ExitCode.OK
        if action == "revoke":
            revoked = client.revoke_key(ctx.args.key)
            if ctx.json:
                ctx.write_json(_key_json(revoked))
            else:
                ctx.message(f'Revoked key "{revoked.name}" (id {revoked.id}).')
            return ExitCode.OK
        keys = client.list_keys()
    if ctx.json:
        ctx.write_json([_key_json(k) for k in keys])
        return ExitCode.OK
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("ID", "NAME", "ROLE", "CREATED", "REVOKED"):
        table.add_column(column, no_wrap=True)
    for k in keys:
        table.add_row(k.id, k.name, k.role, _when(k.created_at), _when(k.revoked_at))
    _print_table(ctx, table)
    return ExitCode.OK


def _schedule_json(s: pb.ScheduleInfo) -> dict[str, object]:
    return {
        "id": s.id, "function": s.function, "cron": s.cron, "tz": s.tz,
        "data": _json_or_text(s.data or b"{}"), "overlap": s.overlap,
        "next_runs": [_rfc(t) for t in s.next_runs], "last_run_at": _rfc(s.last_run),
        "last_result": s.last_result or None, "last_invocation": s.last_invocation or None,
        "last_invocation_status": s.last_invocation_status or None,
    }


def cmd_schedule(ctx: Ctx) -> int:
    args = ctx.args
    try:
        parse_json(args.data, "--data")
    except InvalidArgument as exc:
        raise CliError(exc.message, ExitCode.INVALID) from None
    request = pb.CreateScheduleRequest(name=args.name, cron=args.cron, tz=args.tz,
                                       data=args.data.encode(), overlap=args.overlap)
    with Client(ctx.target) as client:
        created = client.create_schedule(request)
    if ctx.json:
        ctx.write_json(_schedule_json(created))
        return ExitCode.OK
    ctx.out.file.write(created.id + "\n")
    runs = ", ".join(_when(t) for t in created.next_runs)
    ctx.message(f'Scheduled "{created.function}" ({created.cron}, {created.tz}); next runs: '
                f"{runs}")
    return ExitCode.OK


def cmd_schedules(ctx: Ctx) -> int:
    with Client(ctx.target) as client:
        found = client.list_schedules(ctx.args.name)
    if ctx.json:
        ctx.write_json([_schedule_json(s) for s in found])
        return ExitCode.OK
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("ID", "FUNCTION", "CRON", "TZ", "OVERLAP", "NEXT RUN", "LAST RUN", "RESULT"):
        table.add_column(column, no_wrap=True)
    for s in found:
        result = s.last_result or "-"
        if s.last_invocation_status and s.last_result != "skipped":
            result = f"{result} ({s.last_invocation_status})"
        table.add_row(s.id, s.function, s.cron, s.tz, s.overlap,
                      _when(s.next_runs[0]) if s.next_runs else "-", _when(s.last_run), result)
    _print_table(ctx, table)
    return ExitCode.OK


def cmd_unschedule(ctx: Ctx) -> int:
    with Client(ctx.target) as client:
        deleted = client.delete_schedule(ctx.args.id)
    if ctx.json:
        ctx.write_json({**_schedule_json(deleted), "deleted": True})
    else:
        ctx.message(f'Deleted schedule {deleted.id} of "{deleted.function}".')
    return ExitCode.OK


def cmd_invocations(ctx: Ctx) -> int:
    with Client(ctx.target) as client:
        found = client.list_invocations(ctx.args.name, ctx.args.status or "")
    if ctx.json:
        ctx.write_json([_invocation_json(i) for i in found])
        return ExitCode.OK
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("ID", "STATUS", "ATTEMPTS", "SOURCE", "CREATED", "FINISHED", "ERROR"):
        table.add_column(column, no_wrap=True)
    for i in found:
        table.add_row(i.id, i.status, str(i.attempts), i.source, _when(i.created_at),
                      _when(i.finished_at), (i.last_error.splitlines() or ["-"])[0][:60])
    _print_table(ctx, table)
    return ExitCode.OK


def cmd_invocation(ctx: Ctx) -> int:
    with Client(ctx.target) as client:
        found = client.get_invocation(ctx.args.id)
    data = _invocation_json(found)
    if ctx.json:
        ctx.write_json(data)
        return ExitCode.OK
    for key, value in data.items():
        ctx.out.print(Text.assemble((f"{key}:".ljust(17), "bold"), str(value or "-")),
                      soft_wrap=True)
    return ExitCode.OK


def cmd_redrive(ctx: Ctx) -> int:
    with Client(ctx.target) as client:
        count = client.redrive(ctx.args.id or "", ctx.args.all_failed or "")
    if ctx.json:
        ctx.write_json({"id": ctx.args.id or None, "function": ctx.args.all_failed or None,
                        "redriven": count})
    else:
        ctx.message(f"Queued {count} invocation(s) again.")
    return ExitCode.OK


def cmd_versions(ctx: Ctx) -> int:
    with Client(ctx.target) as client:
        versions = client.list_versions(ctx.args.name)
    if ctx.json:
        ctx.write_json([
            {
                "version": v.number, "active": v.active, "pruned": v.pruned,
                "image": v.image, "image_id": v.image_id, "code_sha256": v.code_sha256,
                "code_size_bytes": v.code_size, "created_at": _rfc(v.created_at),
                "deployed_by": v.deployed_by, "source_version": v.source_version or None,
                "active_periods": [
                    {"activated_at": _rfc(getattr(p, "from")),
                     "deactivated_at": _rfc(p.until), "reason": p.reason}
                    for p in v.active_periods
                ],
            }
            for v in versions
        ])
        return ExitCode.OK
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("", "VERSION", "CREATED", "BY", "CODE", "IMAGE", "ACTIVE"):
        table.add_column(column, no_wrap=True)
    for v in versions:
        code = v.code_sha256[:12] + (f" (v{v.source_version})" if v.source_version else "")
        periods = "; ".join(
            f"{_when(getattr(p, 'from'))} - {_when(p.until) if p.HasField('until') else 'now'}"
            f" ({p.reason})" for p in v.active_periods
        ) or "-"
        table.add_row("*" if v.active else "", str(v.number), _when(v.created_at),
                      v.deployed_by, code, "pruned" if v.pruned else v.image, periods)
    _print_table(ctx, table)
    return ExitCode.OK


def cmd_rollback(ctx: Ctx) -> int:
    with Client(ctx.target) as client:
        reply = client.rollback(ctx.args.name, ctx.args.to_version or 0)
    if ctx.json:
        ctx.write_json({"name": reply.name, "version": reply.version,
                        "previous_version": reply.previous_version, "url": reply.url})
        return ExitCode.OK
    ctx.message(f'Rolled back "{reply.name}" from version {reply.previous_version} to version '
                f"{reply.version}. Live at: {reply.url}")
    return ExitCode.OK


def cmd_config(ctx: Ctx) -> int:
    with Client(ctx.target) as client:
        reply = client.update_config(ctx.args.name, _overrides(ctx.args))
    if ctx.json:
        ctx.write_json({"name": reply.name, "version": reply.version, "image": reply.image,
                        "url": reply.url})
        return ExitCode.OK
    ctx.message(f'Configured "{reply.name}": version {reply.version} is live at: {reply.url}')
    return ExitCode.OK


def _target_label(target: Target) -> str:
    """The address as a user would write it: tls:// kept, unix:// already there."""
    return f"tls://{target.address}" if target.tls else target.address


def _daemon_json(info: pb.DaemonInfo, target: Target) -> dict[str, object]:
    return {
        "version": info.version, "api_version": info.api_version,
        "python_version": info.python_version, "docker_version": info.docker_version or None,
        "started_at": _rfc(info.started_at), "domain": info.domain,
        "url_template": info.url_template, "address": _target_label(target),
    }


def cmd_version(ctx: Ctx) -> int:
    """Client first, so it is printed even when the daemon cannot be reached."""
    client_info = {"version": client_version(), "python_version": platform.python_version()}
    if not ctx.json:
        ctx.out.file.write(f"client {client_info['version']}\n")
        ctx.out.file.flush()
    daemon: dict[str, object] | None = None
    failure: CliError | None = None
    try:
        target = ctx.target
        with Client(target) as client:
            info = client.get_version()
        daemon = _daemon_json(info, target)
    except CliError as exc:
        failure = exc
    except grpc.RpcError as exc:
        failure = error_from_rpc(exc, ctx.target)
    if ctx.json:
        ctx.write_json({"client": client_info, "daemon": daemon})
    elif daemon is not None:
        ctx.out.file.write(f"daemon {daemon['version']} (api {daemon['api_version']}) at "
                           f"{daemon['address']}\n")
    if failure is not None:
        ctx.error(failure.message)
        return failure.code
    return ExitCode.OK


def _context_json(name: str, context: Context, current: str | None) -> dict[str, object]:
    return {"name": name, "current": name == current, "host": context.host,
            "api_key_file": context.api_key_file, "tls_ca": context.tls_ca}


def _plain(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _absolute(path: str | None) -> str | None:
    """Paths are stored absolute: lambdactl may run from any folder later."""
    return str(Path(path).expanduser().absolute()) if path else None


def cmd_context(ctx: Ctx) -> int:
    args = ctx.args
    found = contexts.load(contexts.config_path(os.environ))
    action = args.context_command
    if action == "list":
        return _context_list(ctx, found)
    if action == "show":
        name = args.name or found.current
        if name is None:
            raise CliError(f"no current context in {found.path}; name one, or pick one with "
                           "`lambdactl context use NAME`", ExitCode.CONFIG)
        shown = _context_json(name, found.get(name), found.current)
        if ctx.json:
            ctx.write_json(shown)
        else:
            for key, value in shown.items():
                ctx.out.file.write(f"{key + ':':<14}{_plain(value)}\n")
        return ExitCode.OK
    name = contexts.check_name(args.name)
    if action == "add":
        if not args.context_host.startswith("unix:"):
            check_host(args.context_host)
        replaced = name in found.contexts
        found.contexts[name] = Context(args.context_host, _absolute(args.context_key_file),
                                       _absolute(args.context_tls_ca))
        result = {**_context_json(name, found.contexts[name], found.current),
                  "replaced": replaced}
        verb = "Replaced" if replaced else "Added"
        text = f'{verb} context "{name}" ({args.context_host}) in {found.path}.'
    elif action == "use":
        found.get(name)
        found.current = name
        result = {**_context_json(name, found.contexts[name], name)}
        text = f'Now using context "{name}" ({found.contexts[name].host}).'
    else:  # remove
        removed = found.get(name)
        del found.contexts[name]
        was_current = found.current == name
        if was_current:
            found.current = None
        result = {**_context_json(name, removed, None), "current": False, "removed": True,
                  "was_current": was_current}
        text = f'Removed context "{name}".' + (" No context is current now." if was_current
                                                else "")
    contexts.save(found)
    if ctx.json:
        ctx.write_json(result)
    else:
        ctx.message(text)
    return ExitCode.OK


def _context_list(ctx: Ctx, found: contexts.ContextsFile) -> int:
    names = sorted(found.contexts)
    if ctx.json:
        ctx.write_json([_context_json(n, found.contexts[n], found.current) for n in names])
        return ExitCode.OK
    if not names:
        ctx.message(f"No contexts in {found.path}; add one with `lambdactl context add`.")
        return ExitCode.OK
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("", "NAME", "HOST", "API KEY FILE", "TLS CA"):
        table.add_column(column, no_wrap=True)
    for n in names:
        c = found.contexts[n]
        table.add_row("*" if n == found.current else "", n, c.host, c.api_key_file or "-",
                      c.tls_ca or "-")
    _print_table(ctx, table)
    return ExitCode.OK


COMMANDS: dict[str, Callable[[Ctx], int]] = {
    "version": cmd_version,
    "context": cmd_context,
    "logs": cmd_logs,
    "invocations": cmd_invocations,
    "schedule": cmd_schedule,
    "keys": cmd_keys,
    "schedules": cmd_schedules,
    "unschedule": cmd_unschedule,
    "invocation": cmd_invocation,
    "redrive": cmd_redrive,
    "stats": cmd_stats,
    "versions": cmd_versions,
    "rollback": cmd_rollback,
    "config": cmd_config,
    "deploy": cmd_deploy,
    "invoke": cmd_invoke,
    "list": cmd_list,
    "get": cmd_get,
    "delete": cmd_delete,
}


def _console(stream: TextIO | None, default: TextIO) -> Console:
    """On real streams Rich decides about colour itself (a terminal? TERM, NO_COLOR,
    FORCE_COLOR), so nothing here may force a terminal or a colour system; injected
    streams (tests) get plain text at a fixed width."""
    if stream is None:
        return Console(file=default, highlight=False)
    return Console(file=stream, width=TEST_WIDTH, color_system=None, highlight=False)


def main(
    argv: list[str] | None = None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    stdin: TextIO | None = None,
) -> int:
    """Run lambdactl; returns the exit code (see lambdactl.exitcodes)."""
    out_stream = stdout if stdout is not None else sys.stdout
    err_stream = stderr if stderr is not None else sys.stderr
    try:
        with redirect_stdout(out_stream), redirect_stderr(err_stream):
            args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else ExitCode.USAGE
    ctx = Ctx(args, _console(stdout, sys.stdout), _console(stderr, sys.stderr), stdin or sys.stdin)
    try:
        return int(COMMANDS[args.command](ctx))
    except CliError as exc:
        ctx.error(exc.message)
        return int(exc.code)
    except grpc.RpcError as exc:
        error = error_from_rpc(exc, ctx.target)
        ctx.error(error.message)
        return int(error.code)
    except KeyboardInterrupt:
        ctx.message("")
        ctx.error("interrupted")
        return ExitCode.INTERRUPTED
