"""The `context` argument, with AWS's attribute names so existing handlers run unchanged."""

from __future__ import annotations

import os
import socket
import time

ARN_PREFIX = "arn:aws:lambda:local:000000000000:function:"


class LambdaContext:
    """Per-invocation context; the deadline comes from the daemon, which enforces it."""

    def __init__(
        self,
        request_id: str,
        deadline_ms: int,
        function_name: str,
        function_version: str,
        memory_limit_in_mb: int,
        log_stream_name: str,
    ) -> None:
        self.aws_request_id = request_id
        self.function_name = function_name
        self.function_version = function_version
        self.memory_limit_in_mb = memory_limit_in_mb
        self.invoked_function_arn = ARN_PREFIX + function_name
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = log_stream_name
        # AWS sets these only for mobile SDK callers; handlers test them for None.
        self.identity: object | None = None
        self.client_context: object | None = None
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self) -> int:
        """Clamped at zero because handlers use it in arithmetic like sleep budgets."""
        return max(0, self._deadline_ms - int(time.time() * 1000))

    def __repr__(self) -> str:
        return f"LambdaContext({self.function_name!r}, request_id={self.aws_request_id!r})"


class ContextFactory:
    """Reads the function's identity from the environment once, not on every request."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        env = dict(os.environ) if env is None else env
        self.function_name = env.get("AWS_LAMBDA_FUNCTION_NAME", "function")
        self.function_version = env.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        try:
            self.memory_limit_in_mb = int(env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"))
        except ValueError:
            self.memory_limit_in_mb = 128
        # The container's hostname is its short id, which ties the stream to `docker logs`.
        day = time.strftime("%Y/%m/%d", time.gmtime())
        self.log_stream_name = f"{day}/[{self.function_version}]{socket.gethostname()}"

    def make(self, request_id: str, deadline_ms: int) -> LambdaContext:
        return LambdaContext(
            request_id,
            deadline_ms,
            self.function_name,
            self.function_version,
            self.memory_limit_in_mb,
            self.log_stream_name,
        )
