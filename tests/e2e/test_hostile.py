"""Hostile functions fail inside their own container; the daemon and other functions go on."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.support.daemon import Lambdad

pytestmark = pytest.mark.slow

HOSTILE = '''
import os, subprocess, sys

def handler(event, context):
    what = event.get("what")
    if what == "write-root":
        try:
            open("/etc/owned", "w").write("x")
            return "wrote /etc/owned"
        except OSError as exc:
            return f"refused: {exc.strerror}"
    if what == "docker-socket":
        found = [p for p in ("/var/run/docker.sock", "/run/docker.sock") if os.path.exists(p)]
        return {"found": found, "uid": os.getuid(), "run_lambda": sorted(os.listdir("/run/lambda"))}
    if what == "fork-bomb":
        children = []
        try:
            for _ in range(10_000):
                children.append(subprocess.Popen(["sleep", "30"]))
        except OSError as exc:
            for child in children:
                child.kill()
            return f"stopped after {len(children)} processes: {exc.strerror}"
        return "no limit"
    if what == "fill-tmp":
        written = 0
        try:
            with open("/tmp/fill", "wb") as out:
                while written < 1 << 30:
                    out.write(b"x" * (1 << 20))
                    written += 1 << 20
        except OSError as exc:
            os.remove("/tmp/fill")
            return f"stopped at {written >> 20} MiB: {exc.strerror}"
        return "no limit"
    if what == "print-a-lot":
        line = "y" * 1023
        for _ in range(20_000):  # about 20 MiB of output
            print(line)
        return "printed"
    return "?"
'''


def test_hostile_functions_are_contained(fresh_lambdad: Lambdad, tmp_path: Path) -> None:
    daemon = fresh_lambdad
    daemon.stop()
    daemon.extra_args += ["--function-log-size", "1", "--function-log-files", "2"]
    daemon.start()
    folder = tmp_path / "hostile"
    folder.mkdir()
    (folder / "handler.py").write_text(HOSTILE)
    (folder / "lambda.toml").write_text('name = "hostile"\ntimeout = 60\npids_limit = 64\n')
    daemon.deploy(folder)
    daemon.deploy("greet", "--name", "bystander")

    def call(what: str) -> object:
        result = daemon.cli("invoke", "hostile", "--data", json.dumps({"what": what}))
        assert result.code == 0, result.stderr
        return json.loads(result.stdout)

    assert str(call("write-root")).startswith("refused: Read-only file system")
    seen = call("docker-socket")
    assert seen == {"found": [], "uid": 10001, "run_lambda": ["invoke.sock"]}
    forked = str(call("fork-bomb"))
    assert forked.startswith("stopped after") and int(forked.split()[2]) < 64
    filled = str(call("fill-tmp"))
    assert filled.startswith("stopped at") and int(filled.split()[2]) <= 64
    assert call("print-a-lot") == "printed"
    # Everyone else is fine, and the log of the noisy function stays under its cap.
    assert daemon.http("bystander", "/?name=still").json() == {"message": "Hello, still!"}
    assert daemon.cli("list").code == 0
    logs = daemon.state_dir / "logs" / "hostile"

    def kept() -> int:
        return sum(f.stat().st_size for f in logs.iterdir()) if logs.exists() else 0

    deadline = time.monotonic() + 20  # the 20 MiB go through Docker and the log store
    while not (logs / "1.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1)
    assert (logs / "1.jsonl").exists()  # it rotated...
    assert kept() < 3 * (1 << 20)  # ...and keeps at most 2 files of ~1 MiB
