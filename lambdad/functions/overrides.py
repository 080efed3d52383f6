"""The settings a deploy or `config` may change, stated once.

Each row names the setting in every place it travels: lambdactl's flag (with its help),
the control API's `ConfigOverrides` field, and the FunctionConfig (or Scaling) attribute
it replaces. The parser, the CLI's request, the servicer's conversion and
`apply_overrides` all walk this table, so a new override is one row here plus its proto
field (tests/unit/test_overrides.py holds the two together).

Pure and cheap to import: lambdactl's parser reads it to build `--help`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

NETWORKS = ("none", "bridge")

# How lambdactl reads the flag's text; the daemon validates the value again.
Kind = Literal["positive_int", "non_negative_int", "positive_float", "text", "env"]
Value = int | float | str


@dataclass(frozen=True)
class OverrideField:
    attr: str  # the FunctionConfig attribute (Scaling's when `scaling`)
    field: str  # the ConfigOverrides field
    flag: str  # lambdactl's option
    kind: Kind
    metavar: str | None
    help: str
    scaling: bool = False
    choices: tuple[str, ...] | None = None

    @property
    def dest(self) -> str:
        """The argparse attribute the flag lands in."""
        return self.flag.removeprefix("--").replace("-", "_")


# In the order `lambdactl deploy --help` lists them.
OVERRIDE_FIELDS: tuple[OverrideField, ...] = (
    OverrideField("timeout_s", "timeout_seconds", "--timeout", "positive_int", "SECONDS",
                  "seconds an invocation may run before it is stopped"),
    OverrideField("memory_mb", "memory_mb", "--memory", "positive_int", "MiB",
                  "memory limit of each instance, in MiB"),
    OverrideField("cpu", "cpu", "--cpu", "positive_float", "CORES",
                  "CPU limit of each instance, in cores (e.g. 0.5)"),
    OverrideField("concurrency", "concurrency", "--concurrency", "positive_int", "N",
                  "requests one instance serves at once (default 1)", scaling=True),
    OverrideField("min_instances", "min_instances", "--min-instances", "non_negative_int",
                  "N", "instances kept warm even when idle (default 0: scale to zero)",
                  scaling=True),
    OverrideField("max_instances", "max_instances", "--max-instances", "positive_int", "N",
                  "most instances that may run at once (default 10); beyond, requests queue",
                  scaling=True),
    OverrideField("idle_timeout_s", "idle_timeout_seconds", "--idle-timeout", "positive_int",
                  "SECONDS", "idle instances beyond the minimum stop after this (default 300)",
                  scaling=True),
    OverrideField("env", "env", "--env", "env", "KEY=VALUE",
                  "set an environment variable in the function (repeatable; "
                  "added to those in lambda.toml)"),
    OverrideField("handler", "handler", "--handler", "text", "MODULE.FUNCTION",
                  "handler to call"),
    OverrideField("network", "network", "--network", "text", None,
                  "network of the instances: none (no network, the default) or bridge",
                  choices=NETWORKS),
)

# The single-valued ones (env is a map that adds to the manifest's, not a replacement).
SETTING_FIELDS = tuple(f for f in OVERRIDE_FIELDS if f.kind != "env")
_SETTINGS = frozenset(f.attr for f in SETTING_FIELDS)


@dataclass(frozen=True, init=False)
class Overrides:
    """Deploy and config flags: the settings given, by FunctionConfig attribute, and
    environment variables to add; everything else keeps what lambda.toml (or the active
    version) says."""

    settings: Mapping[str, Value]
    env: Mapping[str, str]

    def __init__(self, *, env: Mapping[str, str] | None = None,
                 **settings: Value | None) -> None:
        unknown = sorted(set(settings) - _SETTINGS)
        if unknown:
            raise TypeError(f"not an override: {', '.join(unknown)}")
        given = {name: value for name, value in settings.items() if value is not None}
        object.__setattr__(self, "settings", given)
        object.__setattr__(self, "env", dict(env or {}))
