"""What the daemon counts, in Prometheus form, and the admin listener that serves it."""

from lambdad.metrics.admin import AdminServer
from lambdad.metrics.registry import Metrics

__all__ = ["AdminServer", "Metrics"]
