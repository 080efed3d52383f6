"""Function locks (lambdad/control/locks.py): this node's lock, then the other nodes'
(a remote lock polled until free); a delete does not wait for another node's change."""

from __future__ import annotations

import asyncio

import pytest

from lambdad.control.locks import FunctionLocks
from lambdad.errors import FailedPrecondition


class Remote:
    """What other nodes hold, as the database's advisory locks would."""

    def __init__(self) -> None:
        self.held_elsewhere: set[str] = set()
        self.mine: list[str] = []
        self.tries = 0

    async def try_lock(self, name: str) -> bool:
        self.tries += 1
        if name in self.held_elsewhere:
            return False
        self.mine.append(name)
        return True

    async def unlock(self, name: str) -> None:
        self.mine.remove(name)


def test_a_lock_held_by_another_node_is_waited_for() -> None:
    async def main() -> None:
        remote = Remote()
        locks = FunctionLocks(remote)
        remote.held_elsewhere.add("f")
        entered = asyncio.Event()

        async def change() -> None:
            async with locks.of("f"):
                entered.set()

        task = asyncio.create_task(change())
        await asyncio.sleep(0.35)
        assert not entered.is_set() and remote.tries >= 3 and locks.busy("f")
        remote.held_elsewhere.clear()  # the other node's deploy ended
        await asyncio.wait_for(task, 5)
        assert remote.mine == [] and not locks.busy("f")

    asyncio.run(main())


def test_without_waiting_a_lock_held_elsewhere_fails_and_frees_the_local_one() -> None:
    async def main() -> None:
        remote = Remote()
        locks = FunctionLocks(remote)
        remote.held_elsewhere.add("f")
        with pytest.raises(FailedPrecondition, match="another node"):
            async with locks.of("f", wait=False):
                pass
        assert not locks.busy("f")
        async with locks.of("g", wait=False):
            assert remote.mine == ["g"]
        assert remote.mine == []

    asyncio.run(main())


def test_the_remote_lock_is_released_when_the_change_fails() -> None:
    async def main() -> None:
        remote = Remote()
        locks = FunctionLocks(remote)
        with pytest.raises(RuntimeError):
            async with locks.of("f"):
                raise RuntimeError("build failed")
        assert remote.mine == [] and not locks.busy("f")

    asyncio.run(main())


def test_sqlite_mode_has_no_remote() -> None:
    async def main() -> None:
        locks = FunctionLocks()
        async with locks.of("f"):
            assert locks.busy("f")

    asyncio.run(main())
