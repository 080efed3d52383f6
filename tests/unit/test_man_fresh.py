"""The committed man pages must be what `make man` writes from today's parsers."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _body(path: Path) -> list[str]:
    # The .TH line carries the generation date; everything else must match.
    return [line for line in path.read_text().splitlines() if not line.startswith(".TH ")]


def test_man_pages_are_fresh(tmp_path: Path) -> None:
    subprocess.run(["bash", str(ROOT / "packaging/build-man.sh"), str(tmp_path)], check=True,
                   capture_output=True, cwd=ROOT)
    for name in ("lambdactl.1", "lambdad.8"):
        assert _body(ROOT / "man" / name) == _body(tmp_path / name), (
            f"man/{name} is stale: run `make man`")


def test_man_pages_document_every_command() -> None:
    page = (ROOT / "man" / "lambdactl.1").read_text()
    for command in ("deploy", "invoke", "logs", "rollback", "schedule", "keys", "redrive"):
        assert f".SH COMMAND \\fI\\,'lambdactl {command}'" in page, command
