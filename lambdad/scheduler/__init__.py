"""Time-driven work: the daemon's periodic housekeeping and the cron schedules users create."""

from lambdad.scheduler.housekeeping import Housekeeper

__all__ = ["Housekeeper"]
