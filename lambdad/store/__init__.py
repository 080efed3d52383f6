"""Durable metadata in one SQLite file: functions and their versions (Peewee), plus the tables
that queue/, scheduler/ and auth/ own, all run on the store's one thread."""

from lambdad.store.store import FunctionRecord, Store

__all__ = ["FunctionRecord", "Store"]
