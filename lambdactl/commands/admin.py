"""keys and schedules: the admin side of a daemon."""

from __future__ import annotations

import time

from google.protobuf.timestamp_pb2 import Timestamp

from lambdactl.client import Client
from lambdactl.commands.base import Ctx
from lambdactl.exitcodes import CliError, ExitCode
from lambdactl.render import is_unset, json_or_text, local_time, print_table, rfc3339, table
from lambdad.api.v1 import functions_pb2 as pb
from lambdad.errors import InvalidArgument
from lambdad.jsontext import parse_json


def key_json(k: pb.KeyInfo) -> dict[str, object]:
    return {"id": k.id, "name": k.name, "role": k.role, "created_at": rfc3339(k.created_at),
            "revoked_at": rfc3339(k.revoked_at)}


def cmd_keys(ctx: Ctx) -> int:
    action = ctx.args.keys_command
    with Client(ctx.target) as client:
        if action == "create":
            created = client.create_key(ctx.args.name, ctx.args.role)
            if ctx.json:
                ctx.write_json({**key_json(created.key), "secret": created.secret})
            else:
                ctx.out.file.write(created.secret + "\n")
                ctx.message(f'Created {created.key.role} key "{created.key.name}" '
                            f"(id {created.key.id}). Store the secret now: it is not shown "
                            "again.")
            return ExitCode.OK
        if action == "revoke":
            revoked = client.revoke_key(ctx.args.key)
            if ctx.json:
                ctx.write_json(key_json(revoked))
            else:
                ctx.message(f'Revoked key "{revoked.name}" (id {revoked.id}).')
            return ExitCode.OK
        keys = client.list_keys()
    if ctx.json:
        ctx.write_json([key_json(k) for k in keys])
        return ExitCode.OK
    t = table("ID", "NAME", "ROLE", "CREATED", "REVOKED")
    for k in keys:
        t.add_row(k.id, k.name, k.role, local_time(k.created_at), local_time(k.revoked_at))
    print_table(ctx.out, t)
    return ExitCode.OK


def schedule_json(s: pb.ScheduleInfo) -> dict[str, object]:
    return {
        "id": s.id, "function": s.function, "cron": s.cron, "tz": s.tz,
        "data": json_or_text(s.data or b"{}"), "overlap": s.overlap,
        "next_runs": [rfc3339(t) for t in s.next_runs], "last_run_at": rfc3339(s.last_run),
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
        ctx.write_json(schedule_json(created))
        return ExitCode.OK
    ctx.out.file.write(created.id + "\n")
    runs = ", ".join(local_time(t) for t in created.next_runs)
    ctx.message(f'Scheduled "{created.function}" ({created.cron}, {created.tz}); next runs: '
                f"{runs}")
    return ExitCode.OK


def schedule_result(s: pb.ScheduleInfo) -> str:
    """The RESULT column: the last run's outcome, with its invocation's status if it ran."""
    result = s.last_result or "-"
    if s.last_invocation_status and s.last_result != "skipped":
        result = f"{result} ({s.last_invocation_status})"
    return result


def cmd_schedules(ctx: Ctx) -> int:
    with Client(ctx.target) as client:
        found = client.list_schedules(ctx.args.name)
    if ctx.json:
        ctx.write_json([schedule_json(s) for s in found])
        return ExitCode.OK
    t = table("ID", "FUNCTION", "CRON", "TZ", "OVERLAP", "NEXT RUN", "LAST RUN", "RESULT")
    for s in found:
        t.add_row(s.id, s.function, s.cron, s.tz, s.overlap,
                  local_time(s.next_runs[0]) if s.next_runs else "-", local_time(s.last_run),
                  schedule_result(s))
    print_table(ctx.out, t)
    return ExitCode.OK


def cmd_unschedule(ctx: Ctx) -> int:
    with Client(ctx.target) as client:
        deleted = client.delete_schedule(ctx.args.id)
    if ctx.json:
        ctx.write_json({**schedule_json(deleted), "deleted": True})
    else:
        ctx.message(f'Deleted schedule {deleted.id} of "{deleted.function}".')
    return ExitCode.OK


def node_json(n: pb.NodeInfo) -> dict[str, object]:
    return {"id": n.id, "name": n.name, "state": n.state, "instances": n.instances,
            "cells": n.cells, "load": n.load, "last_seen_at": rfc3339(n.last_seen),
            "started_at": rfc3339(n.started_at), "grpc_address": n.grpc_address,
            "gateway_address": n.gateway_address, "version": n.version, "leader": n.leader,
            "self": n.self}


def cmd_nodes(ctx: Ctx) -> int:
    with Client(ctx.target) as client:
        nodes = client.list_nodes()
    if ctx.json:
        ctx.write_json([node_json(n) for n in nodes])
        return ExitCode.OK
    t = table("NAME", "STATE", "INSTANCES", "CELLS", "LOAD", "LAST SEEN")
    for n in nodes:
        t.add_row(n.name + (" *" if n.leader else ""), n.state, str(n.instances),
                  str(n.cells), str(n.load), _ago(n.last_seen))
    print_table(ctx.out, t)
    return ExitCode.OK


def _ago(ts: Timestamp) -> str:
    """`3s ago`, `5m ago`; unset is `-`."""
    if is_unset(ts):
        return "-"
    seconds = max(0, int(time.time() - ts.ToSeconds()))
    if seconds < 120:
        return f"{seconds}s ago"
    if seconds < 7200:
        return f"{seconds // 60}m ago"
    return local_time(ts)
