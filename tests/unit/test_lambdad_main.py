"""lambdad's exit codes when the daemon fails: a start problem and a fault both exit 1 at
once with a line saying why."""

from __future__ import annotations

from pathlib import Path

import pytest

import lambdad.daemon
from lambdad.host import StartupError
from lambdad.main import main


def _failing_daemon(error: BaseException) -> type:
    class Failing:
        def __init__(self, config: object) -> None:
            self.config = config

        def request_stop(self) -> None:
            pass

        async def run(self) -> None:
            raise error

    return Failing


@pytest.mark.parametrize(("error", "line"), [
    (StartupError("port 8080 is in use"), "cannot start: port 8080 is in use"),
    (RuntimeError("engine went away"), "lambdad failed: RuntimeError: engine went away"),
])
def test_a_failed_run_exits_1_with_the_reason(
        error: BaseException, line: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(lambdad.daemon, "Daemon", _failing_daemon(error))
    monkeypatch.setattr(lambdad.daemon, "install_signal_handlers", lambda daemon: None)
    monkeypatch.setenv("HOME", str(tmp_path))
    code = main(["--state-dir", str(tmp_path / "state"), "--socket",
                 str(tmp_path / "l.sock")])
    assert code == 1
    assert line in caplog.text
