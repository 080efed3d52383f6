"""The example functions are what users copy: an invoker's request must not be able to take
an instance down. Deployed unchanged from functions/ with the real CLI, wheels from
`make example-wheels`, called over HTTP through the gateway.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import fetch_wheels
from tests.support.daemon import Lambdad, running_daemon

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(scope="module")
def daemon() -> Iterator[Lambdad]:
    wheels = fetch_wheels.public_copy()
    with running_daemon("--wheelhouse", str(wheels), "--cell-pool-size", "0",
                        remove=wheels) as started:
        yield started


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


BIG = "x" * 200_000  # 200 KB, well under the gateway's 6 MiB body cap


def test_the_examples_keep_no_unbounded_input_in_memory(daemon: Lambdad) -> None:
    # Items and todos live in the instance's memory: a field without a bound let about
    # forty 6 MiB posts fill a 256 MiB instance, which the runtime then killed.
    daemon.deploy("fastapi-mangum")
    json_type = {"Content-Type": "application/json"}
    huge = daemon.http("fastapi-mangum", "/items", method="POST", headers=json_type,
                       body=f'{{"name": "{BIG}", "price": 1}}'.encode())
    assert huge.status == 422, huge.status
    many = daemon.http("fastapi-mangum", "/items", method="POST", headers=json_type,
                       body=b'{"name": "n", "price": 1, "tags": ' +
                       str(["t"] * 10_000).replace("'", '"').encode() + b"}")
    assert many.status == 422, many.status
    fine = daemon.http("fastapi-mangum", "/items", method="POST", headers=json_type,
                       body=b'{"name": "saw", "price": 3, "tags": ["tool"]}')
    assert fine.status == 201, fine.body

    daemon.deploy("powertools")
    huge = daemon.http("powertools", "/todos", method="POST", headers=json_type,
                       body=f'{{"title": "{BIG}"}}'.encode())
    assert huge.status == 400, huge.status
    # An id of 5000 digits is not an id (int() refuses more than 4300): 404, not a 500.
    long_id = daemon.http("powertools", "/todos/" + "9" * 5000)
    assert long_id.status == 404, (long_id.status, long_id.body[:200])
    assert daemon.http("powertools", "/todos/1").status == 200
