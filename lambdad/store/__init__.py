"""Durable metadata: functions and their versions, in SQLite through Peewee."""

from lambdad.store.store import FunctionRecord, Store

__all__ = ["FunctionRecord", "Store"]
