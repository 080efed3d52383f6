"""What a function is: its name rules, its manifest and its immutable versions."""

from lambdad.functions.manifest import (
    DEFAULT_HANDLER,
    DEFAULT_MEMORY_MB,
    DEFAULT_TIMEOUT_S,
    FunctionConfig,
    Scaling,
    parse_manifest,
)
from lambdad.functions.names import validate_name
from lambdad.functions.overrides import Overrides
from lambdad.functions.version import Activation, FunctionVersion

__all__ = [
    "DEFAULT_HANDLER",
    "DEFAULT_MEMORY_MB",
    "DEFAULT_TIMEOUT_S",
    "Activation",
    "FunctionConfig",
    "FunctionVersion",
    "Overrides",
    "Scaling",
    "parse_manifest",
    "validate_name",
]
