"""The daemon's lifecycle with stand-in parts: components start in order and stop in
reverse; a failure or a stop at any point of the start unwinds exactly what started and
`run` ends at once. The Docker engine is stood in (`connect_docker`), the host checks
are real (on a temporary state folder)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

import pytest

from lambdad.config import Config
from lambdad.config.resolve import resolve
from lambdad.daemon import Daemon, Host
from lambdad.host import StartupError
from lambdad.host.engine import DockerEngine
from lambdad.lifecycle import Component, Lifecycle, Step

NAMES = ["listeners", "store", "functions", "serving", "ready"]
# Wherever the daemon may hang: a guard against a hang, not a speed target.
HANG = 10.0


class Boom(Exception):
    pass


class Part:
    """Records its start and stop in a shared journal; can fail or block in start."""

    def __init__(self, name: str, journal: list[str], *, fail: bool = False,
                 block: bool = False, stop_fails: bool = False) -> None:
        self.name = name
        self.journal = journal
        self.fail = fail
        self.block = block
        self.stop_fails = stop_fails
        self.entered = asyncio.Event()

    async def start(self) -> None:
        self.journal.append(f"start {self.name}")
        self.entered.set()
        if self.fail:
            raise Boom(self.name)
        if self.block:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.journal.append(f"cancelled {self.name}")
                raise

    async def stop(self) -> None:
        self.journal.append(f"stop {self.name}")
        if self.stop_fails:
            raise Boom(f"stop {self.name}")


class FakeClient:
    """The Docker client as the engine component uses it: version and close."""

    def __init__(self, journal: list[str]) -> None:
        self.journal = journal

    def version(self) -> dict[str, str]:
        return {"Version": "99.0"}

    def close(self) -> None:
        self.journal.append("close docker")


def config_in(tmp_path: Path) -> Config:
    resolved, _ = resolve(["--state-dir", str(tmp_path / "state")], {"HOME": str(tmp_path)},
                          lambda _path: None)
    return resolved.config


def daemon_with(tmp_path: Path, journal: list[str], parts: Sequence[Component],
                connect_fails: bool = False) -> Daemon:
    def connect() -> FakeClient:
        if connect_fails:
            raise StartupError("cannot reach the Docker engine (stand-in)")
        journal.append("connect docker")
        return FakeClient(journal)

    def assemble(config: Config, host: Host, engine: DockerEngine) -> Sequence[Component]:
        journal.append(f"assemble with engine {engine.version}")
        return parts

    return Daemon(config_in(tmp_path), connect_docker=connect,  # type: ignore[arg-type]
                  assemble=assemble)


def test_parts_start_in_order_and_stop_in_reverse(tmp_path: Path) -> None:
    journal: list[str] = []
    parts = [Part(name, journal) for name in NAMES]
    daemon = daemon_with(tmp_path, journal, parts)

    async def scenario() -> None:
        running = asyncio.create_task(daemon.run())
        await asyncio.wait_for(parts[-1].entered.wait(), HANG)
        await asyncio.sleep(0)
        assert not running.done()  # serving until asked to stop
        daemon.request_stop()
        await asyncio.wait_for(running, HANG)

    asyncio.run(scenario())
    assert journal == [
        "connect docker", "assemble with engine 99.0",
        *(f"start {n}" for n in NAMES), *(f"stop {n}" for n in reversed(NAMES)),
        "close docker",
    ]


@pytest.mark.parametrize("failing", range(len(NAMES)))
def test_a_part_failing_to_start_unwinds_only_what_started(tmp_path: Path,
                                                           failing: int) -> None:
    journal: list[str] = []
    parts = [Part(name, journal, fail=i == failing) for i, name in enumerate(NAMES)]
    daemon = daemon_with(tmp_path, journal, parts)

    async def scenario() -> None:
        with pytest.raises(Boom, match=NAMES[failing]):
            await asyncio.wait_for(daemon.run(), HANG)

    asyncio.run(scenario())
    started = NAMES[:failing]
    assert journal == [
        "connect docker", "assemble with engine 99.0",
        *(f"start {n}" for n in started), f"start {NAMES[failing]}",
        *(f"stop {n}" for n in reversed(started)),  # not the part that failed
        "close docker",
    ]


def test_no_docker_engine_fails_before_any_part_is_built(tmp_path: Path) -> None:
    journal: list[str] = []
    config = config_in(tmp_path)
    assert config.pid_file is not None
    config.pid_file.parent.mkdir(parents=True)
    config.pid_file.write_text("4194304\n")  # a killed daemon's: cleared before the engine
    daemon = daemon_with(tmp_path, journal, [Part("listeners", journal)], connect_fails=True)

    async def scenario() -> None:
        with pytest.raises(StartupError, match="Docker engine"):
            await asyncio.wait_for(daemon.run(), HANG)

    asyncio.run(scenario())
    assert journal == []
    assert not config.pid_file.exists()


def test_a_busy_socket_fails_before_the_engine_is_reached(tmp_path: Path) -> None:
    """Another live daemon on the control socket: the host check refuses, nothing starts."""
    import socket

    journal: list[str] = []
    config = config_in(tmp_path)
    config.socket.parent.mkdir(parents=True)
    holder = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    holder.bind(str(config.socket))
    holder.listen()
    try:
        daemon = daemon_with(tmp_path, journal, [Part("listeners", journal)])
        with pytest.raises(StartupError, match="already running"):
            asyncio.run(asyncio.wait_for(daemon.run(), HANG))
    finally:
        holder.close()
    assert journal == []


@pytest.mark.parametrize("blocking", range(len(NAMES)))
def test_a_stop_during_the_start_unwinds_what_started_and_returns(tmp_path: Path,
                                                                  blocking: int) -> None:
    journal: list[str] = []
    parts = [Part(name, journal, block=i == blocking) for i, name in enumerate(NAMES)]
    daemon = daemon_with(tmp_path, journal, parts)

    async def scenario() -> None:
        running = asyncio.create_task(daemon.run())
        await asyncio.wait_for(parts[blocking].entered.wait(), HANG)
        daemon.request_stop()
        await asyncio.wait_for(running, HANG)  # returns: a stop is no failure

    asyncio.run(scenario())
    started = NAMES[:blocking]
    assert journal == [
        "connect docker", "assemble with engine 99.0",
        *(f"start {n}" for n in started), f"start {NAMES[blocking]}",
        f"cancelled {NAMES[blocking]}",
        *(f"stop {n}" for n in reversed(started)),
        "close docker",
    ]


def test_a_stop_asked_before_the_start_ends_still_stops_everything(tmp_path: Path) -> None:
    journal: list[str] = []
    parts = [Part(name, journal) for name in NAMES]
    daemon = daemon_with(tmp_path, journal, parts)

    async def scenario() -> None:
        daemon.request_stop()  # e.g. SIGTERM before the loop got to run()
        await asyncio.wait_for(daemon.run(), HANG)

    asyncio.run(scenario())
    assert journal[-len(NAMES) - 1:] == [*(f"stop {n}" for n in reversed(NAMES)),
                                         "close docker"]


# --- lambdad.lifecycle on its own --------------------------------------------------------


def test_a_failing_stop_is_logged_the_rest_still_stop_and_it_is_raised(
        caplog: pytest.LogCaptureFixture) -> None:
    journal: list[str] = []
    parts = [Part("a", journal), Part("b", journal, stop_fails=True), Part("c", journal)]

    async def scenario() -> None:
        life = Lifecycle()
        for part in parts:
            await life.start(part)
        with pytest.raises(Boom, match="stop b"):
            await life.stop()
        await life.stop()  # each stops once

    with caplog.at_level(logging.ERROR, logger="lambdad"):
        asyncio.run(scenario())
    assert journal == ["start a", "start b", "start c", "stop c", "stop b", "stop a"]
    assert "stopping b failed" in caplog.text


def test_a_start_failure_is_what_propagates_not_a_stop_failure() -> None:
    journal: list[str] = []

    async def scenario() -> None:
        with pytest.raises(Boom, match=r"^c$"):
            async with Lifecycle() as life:
                await life.start(Part("a", journal))
                await life.start(Part("b", journal, stop_fails=True))
                await life.start(Part("c", journal, fail=True))

    asyncio.run(scenario())
    assert journal == ["start a", "start b", "start c", "stop b", "stop a"]


def test_a_step_pairs_two_calls_and_either_may_be_absent() -> None:
    journal: list[str] = []

    async def begin() -> None:
        journal.append("begin")

    async def end() -> None:
        journal.append("end")

    async def scenario() -> None:
        async with Lifecycle() as life:
            await life.start(Step("both", begin, end))
            await life.start(Step("only start", begin))
            await life.start(Step("only stop", stop=end))

    asyncio.run(scenario())
    assert journal == ["begin", "begin", "end", "end"]


def test_the_engine_closes_its_client_when_its_start_fails_after_connecting() -> None:
    journal: list[str] = []

    class Broken(FakeClient):
        def version(self) -> dict[str, str]:
            raise RuntimeError("the engine went away")

    engine = DockerEngine(lambda: Broken(journal))  # type: ignore[arg-type, return-value]
    with pytest.raises(RuntimeError):
        asyncio.run(engine.start())
    assert journal == ["close docker"]

