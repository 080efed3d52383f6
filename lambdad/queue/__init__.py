"""Asynchronous invocations: a durable queue in SQLite, delivered with retries."""

from lambdad.queue.model import AsyncInvocation, RetryPolicy, next_step
from lambdad.queue.worker import AsyncWorker

__all__ = ["AsyncInvocation", "AsyncWorker", "RetryPolicy", "next_step"]
