"""What the control API's two ends agree on beyond the proto: lambdad and lambdactl both
import these, so neither restates them.

Pure and cheap to import (the generated messages only), so lambdactl may depend on it
without depending on the gRPC server. The use cases do not import it: the deploy step count
they share with lambdactl is in lambdad/progress.py.
"""

from __future__ import annotations

from typing import cast

from lambdad.api.v1 import functions_pb2 as pb

_STATUS_PREFIX = "FUNCTION_STATUS_"


def function_status(name: str) -> pb.FunctionStatus:
    """The proto value of a function status ("ready", "idle", "deploying")."""
    return cast("pb.FunctionStatus", pb.FunctionStatus.Value(_STATUS_PREFIX + name.upper()))


def function_status_name(value: int) -> str:
    """The status a reply's value names, lower case; "unknown" for one this side lacks."""
    if value == pb.FUNCTION_STATUS_UNSPECIFIED or value not in pb.FunctionStatus.values():
        return "unknown"
    return pb.FunctionStatus.Name(value).removeprefix(_STATUS_PREFIX).lower()


# The control API's gRPC service, as its methods are named on the wire.
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["FunctionService"].full_name
