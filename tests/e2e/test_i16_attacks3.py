"""Attacks on what landed for issue 16 (third attack pass): starts in flight, cell refills.

A redeploy storm: each deploy retires the version before it, and a retired version's
starts in flight are of no use to anyone (its queued requests moved to the new version,
which starts its own instances). They went on all the same: a version with min_instances
whose import takes long kept its containers importing, holding container-start slots and
the host's CPU and memory, for as long as the import took, once per deploy of the storm.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.daemon import Lambdad, wait_for

pytestmark = pytest.mark.slow

IMPORT_S = 20  # under the default start_timeout (30 s): the start would end by itself
SLOW_IMPORT = f'''
import time

time.sleep({IMPORT_S})  # at import: the instance's start lasts this long


def handler(event, context):
    return "v1"
'''
QUICK_IMPORT = '''
def handler(event, context):
    return "v2"
'''


def _write(folder: Path, code: str, min_instances: int) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "app.py").write_text(code)
    (folder / "lambda.toml").write_text(
        'name = "storm"\nhandler = "app.handler"\n'
        f"[scaling]\nmin_instances = {min_instances}\nmax_instances = 4\n")
    return folder


def _importing(daemon: Lambdad, version: int) -> list[str]:
    """Containers still starting an instance of storm `version`: its own containers, and
    stem cells whose code folder holds the function's code (linked in, not yet loaded:
    the owner file comes only once the import has ended)."""
    found = []
    for container in daemon.containers():
        labels = container.labels
        if daemon.owner(container) == ("storm", version):  # its labels, or a cell's owner
            found.append(container.name)
        elif "lambda.cell" in labels:
            code = daemon.state_dir / "c" / labels["lambda.instance"] / "task" / "app.py"
            try:  # a cell's code folder goes with it
                if f"time.sleep({IMPORT_S})" in code.read_text():
                    found.append(container.name)
            except OSError:
                pass
    return found


def test_a_redeploy_cancels_the_starts_of_the_version_it_retires(
    lambdad: Lambdad, tmp_path: Path
) -> None:
    daemon = lambdad
    # The deploy starts one instance of v1 (its import checked); the two more that
    # min_instances asks for start once v1 is active, and import for IMPORT_S.
    folder = _write(tmp_path / "storm", SLOW_IMPORT, min_instances=3)
    daemon.deploy(folder)
    assert wait_for(lambda: len(_importing(daemon, 1)) == 3, 60), daemon.log()[-3000:]
    # v2 imports at once and keeps no instance up beyond the deploy's
    _write(folder, QUICK_IMPORT, min_instances=0)
    daemon.deploy(folder)
    assert daemon.http("storm").json() == "v2"
    try:
        # v1 is retired: its three starts are of no use and stop (a stop's grace) well
        # before their import would have ended on its own
        assert wait_for(lambda: not _importing(daemon, 1), IMPORT_S / 3), (
            _importing(daemon, 1), daemon.log()[-3000:])
        assert "stopped while starting" in daemon.log()
    finally:
        daemon.cli("delete", "storm", "--yes")
