"""The daemon's listeners: bound first (a busy address fails the start before any thread,
task or container exists), served last (once the start-up work is done), drained first."""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

import grpc

from lambdad.config import Config
from lambdad.gateway.server import Gateway
from lambdad.host import StartupError
from lambdad.host.state import unlink
from lambdad.metrics import AdminServer


class Listeners:
    """Binds the Unix socket, the TCP control API, the gateway and the admin listener,
    serving none; StartupError names the address that cannot be had. Stop closes them
    (after `Serving` drained them; stopping twice is harmless)."""

    name = "listeners"

    def __init__(self, config: Config, local: grpc.aio.Server, remote: grpc.aio.Server | None,
                 credentials: grpc.ServerCredentials | None, gateway: Gateway,
                 admin: AdminServer) -> None:
        self.config = config
        self.local = local
        self.remote = remote
        self.credentials = credentials
        self.gateway = gateway
        self.admin = admin
        self.servers = [local] if remote is None else [local, remote]
        self._closes = contextlib.AsyncExitStack()

    async def start(self) -> None:
        config = self.config
        async with contextlib.AsyncExitStack() as stack:  # a failed bind closes the others
            stack.push_async_callback(self.local.stop, None)
            stack.callback(unlink, config.socket)
            _bind_grpc(self.local, f"unix://{config.socket}", None,
                       f"cannot listen for gRPC on unix://{config.socket}")
            if self.remote is not None:
                stack.push_async_callback(self.remote.stop, None)
                address = str(config.grpc_listen)
                _bind_grpc(self.remote, address, self.credentials,
                           f"cannot listen for gRPC on {address}: the address is in use or "
                           "not available")
            stack.push_async_callback(self.gateway.stop, 0)
            try:
                await self.gateway.start(config.gateway_listen.host,
                                         config.gateway_listen.port, serve=False)
            except OSError as exc:
                raise StartupError(
                    f"cannot listen for HTTP on {config.gateway_listen}: {exc.strerror}"
                ) from None
            if config.admin_listen is not None:
                stack.push_async_callback(self.admin.stop)
                try:
                    await self.admin.start(config.admin_listen.host, config.admin_listen.port,
                                           serve=False)
                except OSError as exc:
                    raise StartupError(f"cannot listen for the admin API on "
                                       f"{config.admin_listen}: {exc.strerror}") from None
            self._closes = stack.pop_all()

    async def stop(self) -> None:
        await self._closes.aclose()


def _bind_grpc(server: grpc.aio.Server, address: str,
               credentials: grpc.ServerCredentials | None, refusal: str) -> None:
    try:
        if credentials is not None:
            bound = server.add_secure_port(address, credentials)
        else:
            bound = server.add_insecure_port(address)
    except RuntimeError:
        bound = 0
    if bound == 0:
        raise StartupError(refusal)


class Serving:
    """Starts accepting on the bound listeners; stop drains them: health turns NOT_SERVING,
    then the gateway and the gRPC servers get `drain_grace` seconds for calls in flight."""

    name = "serving"

    def __init__(self, config: Config, listeners: Listeners, health: Any) -> None:
        self.config = config
        self.listeners = listeners
        self.health = health

    async def start(self) -> None:
        try:
            await self.listeners.gateway.serve()
            for server in self.listeners.servers:
                await server.start()
            os.chmod(self.config.socket, 0o660)
            if self.config.admin_listen is not None:
                await self.listeners.admin.serve()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        grace = self.config.drain_grace
        if self.config.admin_listen is not None:
            await self.listeners.admin.stop()
        await self.health.enter_graceful_shutdown()
        await asyncio.gather(
            self.listeners.gateway.stop(grace),
            *(server.stop(grace) for server in self.listeners.servers),
            return_exceptions=True,
        )
