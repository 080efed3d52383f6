"""The gRPC transport of the control plane: one grpc.aio server with the servicer,
health and reflection.

The daemon builds two: one on the Unix socket (its directory's permissions are the access
control) and one on TCP with `BearerAuthInterceptor` (api/interceptors.py), which demands
`authorization: Bearer <key>` on every call but the health check. The RPC handlers are in
api/servicer.py, the message conversions in api/convert.py.
"""

from __future__ import annotations

from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from lambdad.api.contract import SERVICE_NAME
from lambdad.api.servicer import FunctionServicer
from lambdad.api.v1 import functions_pb2_grpc as pb_grpc
from lambdad.auth import KeyRing
from lambdad.control import ControlPlane
from lambdad.metrics import Metrics

__all__ = ["build_server"]

MAX_MESSAGE_BYTES = 8 * 1024 * 1024  # a 6 MiB invoke payload plus framing


def build_server(
    control: ControlPlane,
    health_servicer: Any,  # grpc_health.v1.health.aio.HealthServicer (untyped)
    *,
    interceptors: list[Any] | None = None,
    metrics: Metrics | None = None,
    keys: KeyRing | None = None,
) -> grpc.aio.Server:
    server = grpc.aio.server(
        interceptors=interceptors or (),
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ],
    )
    pb_grpc.add_FunctionServiceServicer_to_server(  # type: ignore[no-untyped-call]
        FunctionServicer(control, metrics, keys), server
    )
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
         reflection.SERVICE_NAME),
        server,
    )
    return server
