"""Time-driven work: the daemon's periodic housekeeping (and, later, cron schedules)."""

from lambdad.scheduler.housekeeping import Housekeeper

__all__ = ["Housekeeper"]
