"""The immutable unit of deployment."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from lambdad.functions.manifest import FunctionConfig


@dataclass(frozen=True)
class FunctionVersion:
    function: str
    number: int
    image: str
    image_id: str
    config: FunctionConfig
    code_sha256: str
    code_size: int
    created_at: datetime
    deployed_by: str = "local"


def image_tag(function: str, number: int) -> str:
    return f"lambda-fn/{function}:v{number}"
