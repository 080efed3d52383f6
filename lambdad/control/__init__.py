"""The control plane's use cases, free of gRPC and HTTP, behind the ControlPlane facade.

The API layer translates protobuf to these calls and LambdaError to status codes; the
use cases decide what happens, in which order, and what is left on failure:
`deploy` (upload to running version), `versions` (rollback, config-only versions,
retention, delete), `invoke` (the one invoke-and-observe path, and the Invoke RPC),
`events` (the async queue), `queries` (functions, stats, logs), `admin` (keys, schedules),
`builds` (the one owner of a version's image and artifact).
"""

from lambdad.control.events import AsyncQueue
from lambdad.control.faults import fault_point
from lambdad.control.invoke import Invoker
from lambdad.control.model import (
    BuildOutput,
    DaemonInfo,
    DeployEvent,
    DeployHeader,
    DeployResult,
    DirectResult,
    FunctionView,
    Progress,
)
from lambdad.control.plane import ControlPlane

__all__ = [
    "AsyncQueue",
    "BuildOutput",
    "ControlPlane",
    "DaemonInfo",
    "DeployEvent",
    "DeployHeader",
    "DeployResult",
    "DirectResult",
    "FunctionView",
    "Invoker",
    "Progress",
    "fault_point",
]
