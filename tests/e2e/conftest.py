from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import Lambdad, running_daemon
from tests.support.wheels import build_wheel, make_readable, public_folder

pytestmark = pytest.mark.docker


@pytest.fixture(scope="session")
def wheelhouse() -> Iterator[Path]:
    folder = public_folder()
    build_wheel(folder, "lambdahelper", "1.2.3",
                'def shout(text):\n    return text.upper() + "!"\n')
    make_readable(folder)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _running_daemon(wheelhouse: Path) -> Iterator[Lambdad]:
    with running_daemon("--wheelhouse", str(wheelhouse)) as daemon:
        yield daemon


@pytest.fixture(scope="module")
def lambdad(wheelhouse: Path) -> Iterator[Lambdad]:
    """One daemon per test module: deploys are the slow part, so modules share one."""
    yield from _running_daemon(wheelhouse)


@pytest.fixture
def fresh_lambdad(wheelhouse: Path) -> Iterator[Lambdad]:
    """A daemon of the test's own, for tests that kill or restart it."""
    yield from _running_daemon(wheelhouse)
