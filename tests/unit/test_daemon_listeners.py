"""The daemon's listeners over real sockets: a busy address fails the start with its name
and leaves nothing bound; the components are the daemon's, in the order that makes a
busy address fail before anything runs and the daemon answer only once it is ready."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health

from lambdad.config import Config, Listen
from lambdad.daemon import Host, components
from lambdad.gateway.server import Gateway
from lambdad.host import StartupError
from lambdad.host.engine import DockerEngine
from lambdad.host.listeners import Listeners, Serving
from lambdad.metrics import AdminServer
from tests.unit.test_daemon import config_in


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def is_free(port: int) -> bool:
    """Nothing is bound to the port (no SO_REUSEADDR: any bound socket refuses us). Only
    for our own listeners: gRPC's core keeps a port it bound until the process ends."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def listening_config(tmp_path: Path) -> Config:
    config = config_in(tmp_path)
    config.socket.parent.mkdir(parents=True)
    return dataclasses.replace(
        config, grpc_listen=Listen("127.0.0.1", free_port()),
        gateway_listen=Listen("127.0.0.1", free_port()),
        admin_listen=Listen("127.0.0.1", free_port()))


class NoInvoker:
    async def invoke(self, request: Any) -> Any:
        raise AssertionError("no request reaches a function in these tests")


def listeners_for(config: Config) -> Listeners:
    admin = AdminServer(lambda: b"", lambda: {"status": "ok"})
    return Listeners(config, grpc.aio.server(), grpc.aio.server(), None,
                     Gateway(NoInvoker()), admin)  # type: ignore[arg-type]


def hold(port: int) -> socket.socket:
    holder = socket.socket()
    holder.bind(("127.0.0.1", port))
    holder.listen()
    return holder


@pytest.mark.parametrize("busy", ["grpc", "gateway", "admin"])
def test_a_busy_address_is_named_and_whatever_was_bound_is_closed(tmp_path: Path,
                                                                  busy: str) -> None:
    config = listening_config(tmp_path)
    address = {"grpc": config.grpc_listen, "gateway": config.gateway_listen,
               "admin": config.admin_listen}[busy]
    assert address is not None
    message = {"grpc": "gRPC", "gateway": "HTTP", "admin": "the admin API"}[busy]

    async def scenario() -> None:
        listeners = listeners_for(config)
        holder = hold(address.port)
        try:
            with pytest.raises(StartupError, match=f"{message} on {address}"):
                await listeners.start()
        finally:
            holder.close()
        assert not config.socket.exists()  # the Unix socket bound first, then removed
        for other in (config.gateway_listen, config.admin_listen):
            assert other is not None
            assert is_free(other.port), other

    asyncio.run(scenario())


def test_bound_listeners_accept_only_once_served_and_close_on_stop(tmp_path: Path) -> None:
    config = listening_config(tmp_path)

    async def scenario() -> None:
        listeners = listeners_for(config)
        await listeners.start()
        serving = Serving(config, listeners, health.aio.HealthServicer())
        try:
            with pytest.raises(ConnectionRefusedError):  # bound, not yet listening
                await asyncio.open_connection("127.0.0.1", config.gateway_listen.port)
            assert config.socket.exists()
            assert not is_free(config.gateway_listen.port)
            await serving.start()
            assert config.socket.stat().st_mode & 0o777 == 0o660
            reader, writer = await asyncio.open_connection("127.0.0.1",
                                                           config.gateway_listen.port)
            writer.write(b"GET / HTTP/1.1\r\nHost: nothing.localhost\r\n\r\n")
            await writer.drain()
            assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"HTTP/1.1 ")
            writer.close()
        finally:
            await serving.stop()
            await listeners.stop()
        assert not config.socket.exists()
        for address in (config.gateway_listen, config.admin_listen):
            assert address is not None
            assert is_free(address.port), address

    asyncio.run(scenario())


class StandInClient:
    """The Docker client as the parts hold it while being built (none calls it)."""

    api = SimpleNamespace(api_version="1.41")

    def version(self) -> dict[str, str]:
        return {"Version": "99.0"}

    def close(self) -> None:
        pass


def test_the_daemon_starts_its_parts_in_this_order(tmp_path: Path) -> None:
    config = listening_config(tmp_path)
    engine = DockerEngine(StandInClient)  # type: ignore[arg-type]

    async def scenario() -> list[str]:
        await engine.start()
        host = Host(daemon_id="0123456789abcdef", keys=[], credentials=None,
                    max_connections=64)
        return [part.name for part in components(config, host, engine)]

    assert asyncio.run(scenario()) == [
        "listeners",  # every address bound first: a busy one fails before anything runs
        "store", "logs", "api keys",
        # die events followed before any container starts, and until every one stopped:
        # a stop's grace ends at its container's exit
        "docker event watcher",
        "functions",  # routes and containers, once the store and logs are there
        "async delivery", "singletons",  # cron and shared clean-ups (SQLite: at once)
        "serving",  # only once the start-up work is done
        "housekeeping", "ready",  # ready last; its stop (STOPPING=1) comes first
    ]
