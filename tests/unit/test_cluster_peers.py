"""The channels a node keeps to its peers (cluster/peers.py, the logs fan-out) are shut
down by `close`, which the daemon runs as the stop of its first component (after the
listeners stopped, so no fanned-out call still uses them)."""

from __future__ import annotations

import asyncio

import grpc

from lambdad.cluster.peers import Peers
from lambdad.cluster.table import NodeRow


async def _nobody() -> list[NodeRow]:
    return []


def test_close_shuts_every_channel_down_and_forgets_them() -> None:
    async def scenario() -> None:
        peers = Peers("self", "k" * 32, _nobody)
        peers._stub("127.0.0.1:1")
        peers._stub("127.0.0.1:2")
        peers._stub("127.0.0.1:1")  # one channel per address, kept
        channels = list(peers._channels.values())
        assert len(channels) == 2
        assert all(c.get_state() != grpc.ChannelConnectivity.SHUTDOWN for c in channels)
        await peers.close()
        assert all(c.get_state() == grpc.ChannelConnectivity.SHUTDOWN for c in channels)
        assert peers._channels == {}
        await peers.close()  # twice is harmless

    asyncio.run(scenario())
