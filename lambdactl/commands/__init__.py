"""The lambdactl subcommands, one module per group; COMMANDS maps a parsed command to its
function (each takes the Ctx and returns an exit code)."""

from __future__ import annotations

from collections.abc import Callable

from lambdactl.commands import admin, deploy, functions, invoke, local
from lambdactl.commands.base import Ctx

COMMANDS: dict[str, Callable[[Ctx], int]] = {
    "version": local.cmd_version,
    "context": local.cmd_context,
    "logs": invoke.cmd_logs,
    "invocations": invoke.cmd_invocations,
    "schedule": admin.cmd_schedule,
    "keys": admin.cmd_keys,
    "schedules": admin.cmd_schedules,
    "unschedule": admin.cmd_unschedule,
    "nodes": admin.cmd_nodes,
    "invocation": invoke.cmd_invocation,
    "redrive": invoke.cmd_redrive,
    "stats": functions.cmd_stats,
    "versions": deploy.cmd_versions,
    "rollback": deploy.cmd_rollback,
    "config": deploy.cmd_config,
    "deploy": deploy.cmd_deploy,
    "invoke": invoke.cmd_invoke,
    "list": functions.cmd_list,
    "get": functions.cmd_get,
    "delete": functions.cmd_delete,
}

__all__ = ["COMMANDS", "Ctx"]
