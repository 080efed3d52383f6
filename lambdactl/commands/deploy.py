"""deploy, config, versions and rollback: the commands that make or pick a version."""

from __future__ import annotations

import argparse
from pathlib import Path

import grpc

from lambdactl import package
from lambdactl.client import Client, error_from_rpc
from lambdactl.commands.base import Ctx
from lambdactl.exitcodes import CliError, ExitCode
from lambdactl.render import StepView, local_time, print_table, rfc3339, table
from lambdactl.target import Target
from lambdad.api.v1 import functions_pb2 as pb
from lambdad.functions.overrides import SETTING_FIELDS
from lambdad.progress import DEPLOY_STEPS


def _overrides(args: argparse.Namespace) -> pb.ConfigOverrides:
    """The flags given, as ConfigOverrides; a flag left out keeps what lambda.toml says."""
    overrides = pb.ConfigOverrides(env=dict(args.env))
    for setting in SETTING_FIELDS:
        value = getattr(args, setting.dest)
        if value is not None:
            setattr(overrides, setting.field, value)
    return overrides


def _stream_deploy(
    ctx: Ctx, view: StepView, target: Target, name: str, root: Path
) -> pb.DeployResult | None:
    """Upload the package and render the daemon's progress; returns its result."""
    code = package.pack(root)
    header = pb.DeployHeader(
        name=name, size=code.size, sha256=code.sha256, overrides=_overrides(ctx.args),
        no_cache=ctx.args.no_cache, prewarm=ctx.args.prewarm or 0,
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


def versions_json(versions: list[pb.VersionInfo]) -> list[dict[str, object]]:
    return [
        {
            "version": v.number, "active": v.active, "pruned": v.pruned,
            "image": v.image, "image_id": v.image_id, "code_sha256": v.code_sha256,
            "code_size_bytes": v.code_size, "created_at": rfc3339(v.created_at),
            "deployed_by": v.deployed_by, "source_version": v.source_version or None,
            "active_periods": [
                {"activated_at": rfc3339(getattr(p, "from")),
                 "deactivated_at": rfc3339(p.until), "reason": p.reason}
                for p in v.active_periods
            ],
        }
        for v in versions
    ]


def cmd_versions(ctx: Ctx) -> int:
    with Client(ctx.target) as client:
        versions = client.list_versions(ctx.args.name)
    if ctx.json:
        ctx.write_json(versions_json(versions))
        return ExitCode.OK
    t = table("", "VERSION", "CREATED", "BY", "CODE", "IMAGE", "ACTIVE")
    for v in versions:
        code = v.code_sha256[:12] + (f" (v{v.source_version})" if v.source_version else "")
        periods = "; ".join(
            f"{local_time(getattr(p, 'from'))} - "
            f"{local_time(p.until) if p.HasField('until') else 'now'}"
            f" ({p.reason})" for p in v.active_periods
        ) or "-"
        t.add_row("*" if v.active else "", str(v.number), local_time(v.created_at),
                  v.deployed_by, code,
                  "pruned" if v.pruned else v.image or "(runtime image)", periods)
    print_table(ctx.out, t)
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
