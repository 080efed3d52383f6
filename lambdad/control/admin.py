"""Administration: API keys for the TCP control API, and cron schedules.

Each use case is given, at construction, the live object its changes must reach at once
(the KeyRing the interceptors check; the CronRunner that fires schedules).
"""

from __future__ import annotations

import logging
import secrets
import time

from lambdad.auth import ROLES, ApiKey, KeyRing, new_secret
from lambdad.auth.keys import digest as key_digest
from lambdad.control.locks import FunctionLocks
from lambdad.errors import InvalidArgument
from lambdad.functions import validate_name
from lambdad.scheduler.cron import Schedule, next_runs
from lambdad.scheduler.cron import validate as cron_validate
from lambdad.scheduler.runner import CronRunner
from lambdad.store import Store

log = logging.getLogger("lambdad.control")


class Keys:
    def __init__(self, store: Store, keyring: KeyRing) -> None:
        self._store = store
        self._keyring = keyring

    async def create(self, name: str, role: str) -> tuple[ApiKey, str]:
        """The new key and its secret, which is shown once and never stored."""
        if not name or len(name) > 64 or not name.replace("-", "").replace("_", "").isalnum():
            raise InvalidArgument("key name must be 1-64 letters, digits, dashes or underscores")
        if role not in ROLES:
            raise InvalidArgument(f"role must be one of {', '.join(ROLES)}")
        key_id, token = new_secret()
        salt = secrets.token_hex(16)
        key = ApiKey(id=key_id, name=name, role=role, salt=salt,
                     digest=key_digest(salt, token.split("_", 2)[2]), created_at=time.time())
        await self._store.keys.insert(key)
        self._keyring.put(key)
        log.info("api key created id=%s name=%s role=%s", key_id, name, role)
        return key, token

    async def list(self) -> list[ApiKey]:
        keys: list[ApiKey] = await self._store.keys.all()
        return keys

    async def revoke(self, name_or_id: str) -> ApiKey:
        key: ApiKey = await self._store.keys.revoke(name_or_id, time.time())
        self._keyring.put(key)
        log.info("api key revoked id=%s name=%s", key.id, key.name)
        return key


class Schedules:
    def __init__(self, store: Store, cron: CronRunner, locks: FunctionLocks) -> None:
        self._store = store
        self._cron = cron
        self._locks = locks

    async def create(self, name: str, cron: str, tz: str, data: bytes,
                     overlap: str) -> Schedule:
        validate_name(name)
        await self._store.get_function(name)
        cron_validate(cron.strip(), tz or "UTC", data or b"{}", overlap or "skip")
        schedule = Schedule(id=secrets.token_hex(8), function=name, cron=cron.strip(),
                            tz=tz or "UTC", data=data or b"{}", overlap=overlap or "skip",
                            created_at=time.time())
        # Under the function's lock: a delete between the check and the insert would
        # fail the insert (foreign key) or leave the cron runner a schedule without rows.
        async with self._locks.of(name):
            await self._store.get_function(name)  # again: it may be gone since
            await self._store.schedules.insert(schedule)
            self._cron.add(schedule)
        log.info("schedule created id=%s function=%s cron=%r tz=%s", schedule.id, name,
                 schedule.cron, schedule.tz)
        return schedule

    async def list(self, name: str) -> list[tuple[Schedule, float | None, str]]:
        """(schedule, next run, status of its last invocation). The next run is the
        runner's own plan where it runs (the leader); on a node that does not lead it is
        computed from the stored row's cron expression, as the leader's runner computes
        it, so every node shows the same (the last run is the shared row's anyway)."""
        if name:
            validate_name(name)
            await self._store.get_function(name)
        found: list[Schedule] = await self._store.schedules.all(name)
        result: list[tuple[Schedule, float | None, str]] = []
        now = time.time()
        for schedule in found:
            status = (await self._store.invocations.status(schedule.last_invocation)
                      if schedule.last_invocation else "")
            planned = self._cron.next_run(schedule.id) if self._cron.running else None
            if planned is None:
                planned = next_runs(schedule.cron, schedule.tz, now, 1)[0]
            result.append((schedule, planned, status))
        return result

    async def delete(self, prefix: str) -> Schedule:
        schedule: Schedule = await self._store.schedules.get(prefix)
        await self._store.schedules.delete(schedule.id)
        self._cron.remove(schedule.id)
        log.info("schedule deleted id=%s function=%s", schedule.id, schedule.function)
        return schedule
