"""The one invoke-and-observe path: the gateway, the Invoke RPC and the async queue's
deliveries all call `Invoker.invoke`, which records each invocation once (metrics and
per-minute stats) with the status its caller sees; and the Invoke RPC's use case.
"""

from __future__ import annotations

import asyncio

from lambdad.control.model import DirectResult
from lambdad.control.ports import Runtime
from lambdad.errors import NotFound
from lambdad.functions import validate_name
from lambdad.httpstatus import status_for
from lambdad.jsontext import parse_json
from lambdad.metrics import Metrics
from lambdad.requestid import new_request_id
from lambdad.runtime.invocation import InvocationRequest, InvocationResponse

FUNCTION_ERROR = b"lambda-function-error"


def function_error(response: InvocationResponse) -> str:
    """The handler's error kind ("Unhandled" when it raised), or "" when it returned."""
    for key, value in response.headers:
        if key.lower() == FUNCTION_ERROR:
            return value.decode(errors="replace")
    return ""


class Invoker:
    """The runtime manager's `invoke`, observed. An invocation's kind in the metrics is its
    `invocation_type` (http, direct, event); its duration runs from `request.received_at`
    (the gateway: when the head arrived) or else from the call. An unknown function is not
    recorded: any Host header would make a new label."""

    def __init__(self, runtime: Runtime, metrics: Metrics | None) -> None:
        self._runtime = runtime
        self._metrics = metrics

    async def invoke(self, request: InvocationRequest) -> InvocationResponse:
        loop = asyncio.get_running_loop()
        started = loop.time() if request.received_at is None else request.received_at
        try:
            response = await self._runtime.invoke(request)
        except Exception as exc:
            if not isinstance(exc, NotFound):
                self._observe(request, status_for(exc)[0], loop.time() - started)
            raise
        self._observe(request, response.status, loop.time() - started, start=response.start,
                      failed=bool(function_error(response)))
        return response

    def _observe(self, request: InvocationRequest, status: int, seconds: float, *,
                 start: str = "", failed: bool = False) -> None:
        if self._metrics is not None:
            self._metrics.invocation(request.function, request.invocation_type, status,
                                     seconds, start=start, function_error=failed)


class DirectInvoke:
    """A synchronous invocation with a JSON payload, as `aws lambda invoke` does."""

    def __init__(self, invoker: Invoker) -> None:
        self._invoker = invoker

    async def invoke(self, name: str, payload: bytes, *,
                     version: int | None = None) -> DirectResult:
        """The payload is checked here: a runtime given JSON it cannot parse (nested past
        its recursion limit) breaks the exchange and loses its instance."""
        validate_name(name)
        parse_json(payload or b"{}", "the payload")
        request_id = new_request_id()
        response = await self._invoker.invoke(InvocationRequest(
            function=name, method=b"POST", target=b"/",
            headers=[(b"content-type", b"application/json")],
            body=payload or b"{}", invocation_type="direct", request_id=request_id,
            version=version,
        ))
        body = await response.read()
        return DirectResult(request_id=request_id, status=response.status, payload=body,
                            function_error=function_error(response), version=response.version,
                            cold_start=response.cold_start)
