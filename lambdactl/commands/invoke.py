"""invoke and logs, and the queued invocations: invocations, invocation, redrive."""

from __future__ import annotations

import json
import time
from pathlib import Path

from lambdactl.client import Client
from lambdactl.commands.base import Ctx
from lambdactl.exitcodes import CliError, ExitCode
from lambdactl.render import (
    json_or_text,
    local_time,
    parse_reply,
    print_fields,
    print_table,
    printable,
    rfc3339,
    table,
    to_datetime,
)
from lambdad.api.v1 import functions_pb2 as pb
from lambdad.errors import InvalidArgument
from lambdad.jsontext import parse_json

_STREAMS = {"stdout": "out", "stderr": "err", "runtime": "rt"}  # rt: the runtime's frames


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
    is_json, value = parse_reply(reply.payload)
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


def log_line(entry: pb.LogEntry) -> str:
    """One `lambdactl logs` line; the function's text is escaped (see `printable`)."""
    stamp = to_datetime(entry.time).astimezone().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    request = entry.request_id[:8] if entry.request_id else "-"
    stream = _STREAMS.get(entry.stream, entry.stream[:3])
    node = f"{printable(entry.node)} " if entry.node else ""  # cluster mode: who served it
    return f"{stamp} {node}v{entry.version} {request} {stream:>3} {printable(entry.message)}"


def log_json(entry: pb.LogEntry) -> str:
    return json.dumps({
        "logged_at": rfc3339(entry.time, "milliseconds"), "function": entry.function,
        "version": entry.version, "instance": entry.instance, "stream": entry.stream,
        "request_id": entry.request_id or None, "message": entry.message,
        **({"node": entry.node} if entry.node else {}),
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
                    ctx.out.file.write(log_json(entry) + "\n")
                else:
                    ctx.out.file.write(log_line(entry) + "\n")
                ctx.out.file.flush()
        except KeyboardInterrupt:
            stream.cancel()
            return ExitCode.INTERRUPTED
    return ExitCode.OK


def invocation_json(i: pb.InvocationInfo) -> dict[str, object]:
    return {
        "id": i.id, "function": i.function, "status": i.status, "attempts": i.attempts,
        "source": i.source, "created_at": rfc3339(i.created_at),
        "next_attempt_at": rfc3339(i.next_attempt_at) if i.status == "queued" else None,
        "started_at": rfc3339(i.started_at), "finished_at": rfc3339(i.finished_at),
        "status_code": i.status_code or None,
        "payload": json_or_text(i.payload),
        "result": json_or_text(i.result) if i.result else None,
        "last_error": i.last_error or None,
    }


def cmd_invocations(ctx: Ctx) -> int:
    with Client(ctx.target) as client:
        found = client.list_invocations(ctx.args.name, ctx.args.status or "")
    if ctx.json:
        ctx.write_json([invocation_json(i) for i in found])
        return ExitCode.OK
    t = table("ID", "STATUS", "ATTEMPTS", "SOURCE", "CREATED", "FINISHED", "ERROR")
    for i in found:
        t.add_row(i.id, i.status, str(i.attempts), i.source, local_time(i.created_at),
                  local_time(i.finished_at), (i.last_error.splitlines() or ["-"])[0][:60])
    print_table(ctx.out, t)
    return ExitCode.OK


def cmd_invocation(ctx: Ctx) -> int:
    with Client(ctx.target) as client:
        found = client.get_invocation(ctx.args.id)
    data = invocation_json(found)
    if ctx.json:
        ctx.write_json(data)
        return ExitCode.OK
    print_fields(ctx.out, [(key, str(value or "-")) for key, value in data.items()], 17)
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
