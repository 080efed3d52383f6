"""Function logs: captured from instances, kept per function in the state folder, followed."""

from lambdad.logs.capture import LogCapture
from lambdad.logs.entry import LogEntry, LogQuery, parse_line
from lambdad.logs.store import LogStore

__all__ = ["LogCapture", "LogEntry", "LogQuery", "LogStore", "parse_line"]
