"""Calls to the other nodes' control API (cluster mode): log fan-out.

Each node dials the others at the gRPC address they registered in the nodes table,
with the cluster key as its bearer token (the `cluster` role: Logs, forced local_only,
and ListNodes only). With TLS on, the node's own certificate is the root it trusts
(one certificate, or one CA, for the whole cluster). One channel per address, kept.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import grpc

from lambdad.api.convert import from_log_entry
from lambdad.api.v1 import functions_pb2 as pb
from lambdad.api.v1 import functions_pb2_grpc as pb_grpc
from lambdad.cluster.table import NodeRow
from lambdad.logs import LogEntry, LogQuery

log = logging.getLogger("lambdad.cluster")


class Peers:
    def __init__(self, self_id: str, cluster_key: str,
                 nodes: Callable[[], Awaitable[list[NodeRow]]],
                 root_certificate: bytes | None = None) -> None:
        self.self_id = self_id
        self._metadata = (("authorization", f"Bearer {cluster_key}"),)
        self._nodes = nodes
        self._root = root_certificate
        self._channels: dict[str, grpc.aio.Channel] = {}

    async def live(self) -> list[NodeRow]:
        """The other nodes marked up."""
        return [n for n in await self._nodes() if n.state == "up" and n.id != self.self_id]

    def _stub(self, address: str) -> Any:
        channel = self._channels.get(address)
        if channel is None:
            options = [("grpc.keepalive_time_ms", 10_000),
                       ("grpc.keepalive_permit_without_calls", 1)]
            if self._root is not None:
                channel = grpc.aio.secure_channel(
                    address, grpc.ssl_channel_credentials(self._root), options=options)
            else:
                channel = grpc.aio.insecure_channel(address, options=options)
            self._channels[address] = channel
        return pb_grpc.FunctionServiceStub(channel)  # type: ignore[no-untyped-call]

    async def logs(self, node: NodeRow, query: LogQuery, *, follow: bool,
                   timeout: float | None = None) -> AsyncIterator[LogEntry]:
        """That node's own lines (asked local_only), tagged with its name."""
        request = logs_request(query, follow=follow)
        call = self._stub(node.grpc_address).Logs(request, metadata=self._metadata,
                                                  timeout=timeout)
        try:
            async for message in call:
                yield from_log_entry(message, node.name)
        finally:
            call.cancel()

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close(None)


def logs_request(query: LogQuery, *, follow: bool) -> pb.LogsRequest:
    """The request a peer gets: always local_only; `since` in whole seconds, rounded up
    (the caller drops what it already has)."""
    since = 0
    if query.since is not None:
        since = max(1, math.ceil((datetime.now(UTC) - query.since).total_seconds()) + 1)
    return pb.LogsRequest(name=query.function, follow=follow, since_seconds=since,
                          tail=query.tail, request_id=query.request_id,
                          version=query.version, local_only=True)


def observe(config: Any, host: Any, control: Any, store: Any) -> Peers | None:
    """Tells the control plane who this node is (`lambdactl nodes`, log tags) and, in
    cluster mode, gives it the peers to fan `logs` out to (lambdad.daemon's Config,
    Host, ControlPlane and Store)."""
    from lambdad import __version__
    from lambdad.cluster.wiring import cluster_mode, grpc_address
    from lambdad.control.queries import NodeSelf

    clustered = cluster_mode(config)
    address = grpc_address(config) if clustered else str(config.grpc_listen or "")
    node = NodeSelf(
        id=host.daemon_id, name=config.node_name, grpc_address=address,
        gateway_address=str(config.gateway_listen), version=__version__,
        started_at=datetime.now(UTC), cluster=clustered,
        nodes=store.nodes.all if clustered else None,
        leader=store.nodes.leader if clustered else None)
    peers = None
    if clustered and host.cluster_key:
        root = config.tls_cert.read_bytes() if config.tls_cert is not None else None
        peers = Peers(host.daemon_id, host.cluster_key, store.nodes.all, root)
    control.observe_cluster(node, peers)
    return peers
