"""Why a pip run failed, told to a deployer (pure: pip's output tail in, a message out)."""

from __future__ import annotations

import re
import signal
from collections.abc import Sequence
from dataclasses import dataclass

from lambdad.build.limits import MIB, BuildLimits
from lambdad.build.requirements import plain_requirement
from lambdad.build.wheeltags import TargetPlatform

_NO_MATCH = re.compile(r"No matching distribution found for (?P<req>\S+)")
_NEEDED_BY = re.compile(
    r"satisfies the requirement (?P<req>\S+) \(from (?!versions:)(?P<who>[^)]+)\)")
_CAUSE = re.compile(r"^\s*(?P<who>\S+ \S+) depends on (?P<req>\S+)")


def missing_wheel(tail: list[str]) -> tuple[str, str] | None:
    """(requirement, who needs it or "") pip found no wheel of, when pip said so itself."""
    needed_by = {m.group("req"): m.group("who") for line in tail
                 if (m := _NEEDED_BY.search(line))}
    for line in tail:
        if found := _NO_MATCH.search(line):
            return found.group("req"), needed_by.get(found.group("req"), "")
    return None


def conflict_causes(tail: list[str]) -> list[tuple[str, str]]:
    """(requirement, who needs it) from pip's "The conflict is caused by" lines, one per
    package: a package without a compatible wheel shows up there as a "conflict".

    A package's metadata wrote those requirements, and each goes to pip again as an
    argument (`pipcommand.wheel_check_command`): only one that requirements.txt could hold (a name,
    extras, versions) is kept, never one pip would open as a path, archive or URL."""
    found: dict[str, tuple[str, str]] = {}
    for line in tail:
        if cause := _CAUSE.match(line):
            # pip prints markers after "; ", so the requirement stops at ";".
            requirement = plain_requirement(cause.group("req").split(";", 1)[0])
            if requirement is None:
                continue
            name = re.split(r"[<>=!~\[;( ]", requirement, maxsplit=1)[0].lower()
            found.setdefault(name, (requirement, cause.group("who")))
    return list(found.values())


# pip lines that say nothing to a deployer (an index folder of the operator's without
# this package).
NOISE = ("is ignored: it is neither a file nor a directory",)


@dataclass(frozen=True)
class PipResult:
    code: int
    tail: list[str]
    timed_out: bool
    disk_short: str = ""  # why the disk watch stopped pip (build_min_free_disk), or ""


def no_wheel_message(requirement: str, needed_by: str, target: TargetPlatform) -> str:
    who = f" (needed by {needed_by})" if needed_by else ""
    return (f"requirements.txt: no version of {requirement}{who} has a wheel for "
            f"{target.describe()} (or the index has no package of that name); wheels "
            f"tagged {target.describe_tags()} would run. lambda installs wheels only and "
            "never builds a source distribution: pick a version that publishes such a "
            "wheel, or vendor the package into the function folder")


def explain_failure(result: PipResult, limits: BuildLimits, target: TargetPlatform,
                    no_wheel: Sequence[tuple[str, str]] = ()) -> str:
    """The deploy error for a pip run that did not succeed; `no_wheel` lists the
    (requirement, needed by) that checks found without a compatible wheel."""
    where = f"wheels for {target.describe()}"
    if result.disk_short:
        return f"requirements.txt: resolving stopped: {result.disk_short}"
    if result.timed_out:
        return (f"requirements.txt: resolving {where} did not finish within the build "
                f"timeout of {limits.timeout_s:g} s (build_timeout)")
    if result.code in (-signal.SIGXCPU, -signal.SIGKILL):
        return (f"requirements.txt: pip was stopped by the build limits ({limits.timeout_s:g} "
                "s of CPU, build_timeout)")
    if any("MemoryError" in line for line in result.tail):
        return (f"requirements.txt: pip ran out of memory (build_memory = "
                f"{limits.memory_bytes // MIB} MiB)")
    direct = missing_wheel(result.tail)
    if direct is not None:
        return no_wheel_message(*direct, target)
    if no_wheel:
        return "\n".join(no_wheel_message(req, who, target) for req, who in no_wheel)
    return (f"requirements.txt could not be resolved to {where} (pip exited with "
            f"{result.code}):\n" + "\n".join(result.tail))
