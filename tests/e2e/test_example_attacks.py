"""The example functions are what users copy: an invoker's request must not be able to take
an instance down. Deployed unchanged from functions/ with the real CLI, wheels from
`make example-wheels`, called over HTTP through the gateway.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import fetch_wheels
from tests.support.daemon import Lambdad

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(scope="module")
def daemon() -> Iterator[Lambdad]:
    if not fetch_wheels.is_fresh():
        pytest.fail("the example functions' wheels are missing or stale: run "
                    "`make example-wheels` (it downloads them from PyPI)")
    # World-readable, for pip as uid 65534 (build_user).
    wheels = Path(tempfile.mkdtemp(prefix="lt-example-wheels-", dir="/tmp"))
    wheels.chmod(0o755)
    for wheel in fetch_wheels.CACHE.glob("*.whl"):
        shutil.copy(wheel, wheels / wheel.name)
        (wheels / wheel.name).chmod(0o644)
    started = Lambdad(extra_args=["--wheelhouse", str(wheels), "--cell-pool-size", "0"])
    try:
        started.start()
        yield started
    finally:
        started.close()
        shutil.rmtree(wheels, ignore_errors=True)


def test_the_fastapi_example_bounds_the_image_a_query_asks_for(daemon: Lambdad) -> None:
    # `size` sets a width and height: 20000 asked for a 1.2 GB pixel buffer in an instance
    # of 256 MiB, and one request took the instance (and every request on it) down.
    daemon.deploy("fastapi-mangum")
    huge = daemon.http("fastapi-mangum", "/pixel.png?size=20000")
    assert huge.status == 422, (huge.status, huge.body[:300])
    for size in ("0", "-5"):
        assert daemon.http("fastapi-mangum", f"/pixel.png?size={size}").status == 422
    ok = daemon.http("fastapi-mangum", "/pixel.png?size=64")
    assert ok.status == 200 and ok.body.startswith(b"\x89PNG")
