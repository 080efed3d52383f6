from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import Lambdad
from tests.support.wheels import build_wheel

pytestmark = pytest.mark.docker


@pytest.fixture(scope="session")
def wheelhouse() -> Iterator[Path]:
    # Not under pytest's 0700 temp folder: a daemon running as root resolves wheels as
    # uid 65534 (build_user), which must be able to read them, as in production.
    folder = Path(tempfile.mkdtemp(prefix="lt-wheels-", dir="/tmp"))
    folder.chmod(0o755)
    build_wheel(folder, "lambdahelper", "1.2.3",
                'def shout(text):\n    return text.upper() + "!"\n')
    for wheel in folder.iterdir():
        wheel.chmod(0o644)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _running_daemon(wheelhouse: Path) -> Iterator[Lambdad]:
    daemon = Lambdad(extra_args=["--wheelhouse", str(wheelhouse)])
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.close()


@pytest.fixture(scope="module")
def lambdad(wheelhouse: Path) -> Iterator[Lambdad]:
    """One daemon per test module: deploys are the slow part, so modules share one."""
    yield from _running_daemon(wheelhouse)


@pytest.fixture
def fresh_lambdad(wheelhouse: Path) -> Iterator[Lambdad]:
    """A daemon of the test's own, for tests that kill or restart it."""
    yield from _running_daemon(wheelhouse)
