"""list, get, delete and stats: what is deployed and how it is doing."""

from __future__ import annotations

from typing import Any

from lambdactl.client import Client
from lambdactl.commands.base import Ctx
from lambdactl.exitcodes import CliError, ExitCode
from lambdactl.render import (
    MIB,
    local_time,
    ms,
    ms_json,
    plural,
    print_fields,
    print_table,
    rfc3339,
    size,
    table,
)
from lambdad.api.contract import function_status_name
from lambdad.api.v1 import functions_pb2 as pb


def _status(fn: pb.Function) -> str:
    return function_status_name(fn.status)


def function_json(fn: pb.Function, *, detail: bool) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "name": fn.name,
        "version": fn.version,
        "status": _status(fn),
        "url": fn.url,
        "deployed_at": rfc3339(fn.deployed_at),
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


def cmd_list(ctx: Ctx) -> int:
    with Client(ctx.target) as client:
        functions = sorted(client.list_functions(), key=lambda f: f.name)
    if ctx.json:
        ctx.write_json([function_json(fn, detail=False) for fn in functions])
        return ExitCode.OK
    if not functions:
        ctx.message("No functions deployed.")
        return ExitCode.OK
    t = table("NAME", "VERSION", "STATUS", "URL", "DEPLOYED AT")
    for fn in functions:
        t.add_row(fn.name, str(fn.version), _status(fn), fn.url, local_time(fn.deployed_at))
    print_table(ctx.out, t)
    return ExitCode.OK


def function_rows(fn: pb.Function) -> list[tuple[str, str]]:
    """`lambdactl get`'s text: one labelled line per setting."""
    cfg = fn.config
    scaling = cfg.scaling
    counts = fn.instances
    env = ", ".join(f"{key}={cfg.env[key]}" for key in sorted(cfg.env)) or "-"
    return [
        ("Name", fn.name),
        ("Version", str(fn.version)),
        ("Status", _status(fn)),
        ("URL", fn.url),
        ("Deployed at", local_time(fn.deployed_at)),
        # A standard-runtime version has no image of its own: it runs the runtime image.
        ("Image", fn.image or "(runtime image)"),
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
        ("Code size", f"{size(fn.code_size)} ({fn.code_size} bytes)"),
    ]


def cmd_get(ctx: Ctx) -> int:
    with Client(ctx.target) as client:
        fn = client.get_function(ctx.args.name, show_env=ctx.args.show_env)
    if ctx.json:
        ctx.write_json(function_json(fn, detail=True))
        return ExitCode.OK
    rows = function_rows(fn)
    print_fields(ctx.out, rows, max(len(key) for key, _ in rows) + 3)
    return ExitCode.OK


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
        f'Deleted function "{reply.name or name}" ({plural(reply.versions_removed, "version")}, '
        f"{plural(reply.instances_removed, 'instance')})."
    )
    return ExitCode.OK


def _cells_json(c: pb.CellPoolClass) -> dict[str, object]:
    return {"resource_class": c.resource_class, "ready": c.ready, "starting": c.starting,
            "memory_bytes": c.memory_bytes}


def _print_cells(ctx: Ctx, cells: list[pb.CellPoolClass]) -> None:
    t = table("STEM CELLS (CLASS)", "READY", "STARTING", "MEMORY",
              right=("READY", "STARTING", "MEMORY"))
    for c in cells:
        t.add_row(c.resource_class, str(c.ready), str(c.starting), size(c.memory_bytes))
    if len(cells) > 1:
        t.add_row("total", str(sum(c.ready for c in cells)),
                  str(sum(c.starting for c in cells)),
                  size(sum(c.memory_bytes for c in cells)))
    print_table(ctx.out, t)


def stats_json(functions: list[pb.FunctionStats]) -> list[dict[str, object]]:
    return [
        {"name": f.name, "instances_now": f.instances_now, "memory_bytes": f.memory_bytes,
         "windows": [
            {"window": w.window, "invocations": w.invocations, "error_rate": w.error_rate,
             "p50_ms": ms_json(w.p50_seconds), "p95_ms": ms_json(w.p95_seconds),
             "p99_ms": ms_json(w.p99_seconds), "cold_start_rate": w.cold_start_rate,
             "instances_max": w.instances_max}
            for w in f.windows]}
        for f in functions
    ]


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
        ctx.write_json(stats_json(functions))
        return ExitCode.OK
    t = table("FUNCTION", "WINDOW", "INVOCATIONS", "ERRORS", "P50 MS", "P95 MS", "P99 MS",
              "COLD", "INSTANCES", "MEMORY",
              right=("INVOCATIONS", "ERRORS", "P50 MS", "P95 MS", "P99 MS", "COLD",
                     "INSTANCES", "MEMORY"))
    for f in functions:
        for i, w in enumerate(f.windows):
            now = i == 0  # instances and memory now, on the function's first line
            t.add_row(f.name, w.window, str(w.invocations), f"{w.error_rate:.1%}",
                      ms(w.p50_seconds), ms(w.p95_seconds), ms(w.p99_seconds),
                      f"{w.cold_start_rate:.1%}",
                      f"{f.instances_now} now, max {w.instances_max}" if now
                      else f"max {w.instances_max}",
                      size(f.memory_bytes) if now else "")
    print_table(ctx.out, t)
    if cells:
        _print_cells(ctx, cells)
    return ExitCode.OK
