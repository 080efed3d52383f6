"""What the control plane's use cases take and give back: plain values, free of gRPC."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from lambdad.functions import Overrides
from lambdad.progress import DEPLOY_STEPS
from lambdad.runtime.manager import PoolCounts
from lambdad.store import FunctionRecord


@dataclass(frozen=True)
class DeployHeader:
    name: str
    size: int
    sha256: str
    overrides: Overrides
    no_cache: bool = False  # resolve requirements.txt again, not from the build cache
    prewarm: int = 0  # instances loaded before traffic moves; 0: the one every deploy starts


@dataclass(frozen=True)
class Progress:
    step: int
    title: str
    done: bool
    total: int = DEPLOY_STEPS


@dataclass(frozen=True)
class BuildOutput:
    line: str


@dataclass(frozen=True)
class DeployResult:
    name: str
    version: int
    image: str
    url: str


DeployEvent = Progress | BuildOutput | DeployResult


@dataclass(frozen=True)
class DirectResult:
    request_id: str
    status: int
    payload: bytes
    function_error: str  # "Unhandled" when the handler raised
    version: int
    cold_start: bool


@dataclass(frozen=True)
class DaemonInfo:
    """What GetVersion reports: fixed for the life of the process, so clients can
    tell which daemon (and API) they talk to without any side effect."""

    version: str
    api_version: str
    python_version: str
    docker_version: str  # "" when the engine did not say
    started_at: datetime
    domain: str
    url_template: str  # "http://{name}.localhost:8080"

    def url(self, name: str) -> str:
        return self.url_template.format(name=name)


@dataclass(frozen=True)
class FunctionView:
    record: FunctionRecord
    status: str  # "ready" | "idle" | "deploying"
    url: str
    instances: PoolCounts
