"""version and context: the commands that work (at least partly) without a daemon."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import grpc

from lambdactl import contexts
from lambdactl.client import Client, error_from_rpc
from lambdactl.commands.base import Ctx
from lambdactl.contexts import Context
from lambdactl.exitcodes import CliError, ExitCode
from lambdactl.parser import client_version
from lambdactl.render import plain, print_table, rfc3339, table
from lambdactl.target import Target, check_host
from lambdad.api.v1 import functions_pb2 as pb


def _target_label(target: Target) -> str:
    """The address as a user would write it: tls:// kept, unix:// already there."""
    return f"tls://{target.address}" if target.tls else target.address


def _daemon_json(info: pb.DaemonInfo, target: Target) -> dict[str, object]:
    return {
        "version": info.version, "api_version": info.api_version,
        "python_version": info.python_version, "docker_version": info.docker_version or None,
        "started_at": rfc3339(info.started_at), "domain": info.domain,
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
                ctx.out.file.write(f"{key + ':':<14}{plain(value)}\n")
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
    t = table("", "NAME", "HOST", "API KEY FILE", "TLS CA")
    for n in names:
        c = found.contexts[n]
        t.add_row("*" if n == found.current else "", n, c.host, c.api_key_file or "-",
                  c.tls_ca or "-")
    print_table(ctx.out, t)
    return ExitCode.OK
