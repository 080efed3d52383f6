"""What a build may leave behind: the labels of its image (pure), and the free space it
must leave on the Docker data root (statvfs of a real folder, no engine)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from lambdad.build.dockerfile import foreign_labels
from lambdad.build.limits import BuildLimits
from lambdad.build.watchdog import BuildWatchdog, DiskFloor
from lambdad.errors import BuildFailed

OURS = {"lambda.function": "fn", "lambda.version": "3", "lambda.daemon": "d1"}
RUNTIME = {"lambda.runtime": "python3.11", "lambda.runtime.protocol": "http-unix-v1"}


def test_our_labels_and_the_runtime_images_pass() -> None:
    found = {**OURS, **RUNTIME, "org.opencontainers.image.title": "x", "maintainer": "me"}
    assert foreign_labels(found, OURS, RUNTIME) == []


@pytest.mark.parametrize(("extra", "expected"), [
    ({"lambda.cell": "small"}, ["lambda.cell"]),
    ({"lambda.cleanup": "1"}, ["lambda.cleanup"]),
    ({"lambda.instance": "i-1"}, ["lambda.instance"]),
    ({"lambda.anything": "x", "lambda.cell": "c"}, ["lambda.anything", "lambda.cell"]),
    ({"lambda.runtime": "evil"}, ["lambda.runtime"]),  # not the runtime image's value
    ({"lambda.daemon": "another"}, ["lambda.daemon"]),  # not ours
    ({"lambda.stamp": "1"}, ["lambda.stamp"]),  # a Dockerfile cannot pose as another build
])
def test_a_lambda_label_lambdad_did_not_set_is_foreign(
    extra: dict[str, str], expected: list[str]
) -> None:
    assert foreign_labels({**OURS, **RUNTIME, **extra}, OURS, RUNTIME) == expected


def test_a_control_label_is_foreign_even_if_the_runtime_image_had_it() -> None:
    inherited = {**RUNTIME, "lambda.cell": "small"}
    assert foreign_labels({**OURS, "lambda.cell": "small"}, OURS, inherited) == ["lambda.cell"]


def _free(path: Path) -> int:
    info = os.statvfs(path)
    return info.f_bavail * info.f_frsize


def test_the_disk_floor_is_measured_on_the_folder(tmp_path: Path) -> None:
    free = _free(tmp_path)
    assert DiskFloor(str(tmp_path), 1).short() is None
    DiskFloor(str(tmp_path), 1).check()
    reason = DiskFloor(str(tmp_path), free + 1024**4).short()
    assert reason is not None and "(build_min_free_disk)" in reason and str(tmp_path) in reason
    with pytest.raises(BuildFailed, match="image build not started: the Docker data root"):
        DiskFloor(str(tmp_path), free + 1024**4).check()


def test_the_watchdog_fires_when_free_space_falls_below_the_floor(tmp_path: Path) -> None:
    floor = DiskFloor(str(tmp_path), _free(tmp_path) + 1024**4)
    watchdog = BuildWatchdog(time.monotonic() + 60, floor)
    try:
        deadline = time.monotonic() + 10
        while not watchdog.fired and time.monotonic() < deadline:
            time.sleep(0.05)
        assert watchdog.fired
        assert watchdog.message(BuildLimits()).startswith("image build stopped: the Docker data")
    finally:
        watchdog.stop()


def test_the_watchdog_still_fires_at_the_deadline() -> None:
    watchdog = BuildWatchdog(time.monotonic() + 0.2, None)
    try:
        deadline = time.monotonic() + 10
        while not watchdog.fired and time.monotonic() < deadline:
            time.sleep(0.05)
        assert watchdog.fired
        assert "did not finish within the build timeout" in watchdog.message(BuildLimits())
    finally:
        watchdog.stop()
