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


def test_shell_completion_is_fresh(tmp_path: Path) -> None:
    import sys

    subprocess.run([sys.executable, str(ROOT / "packaging/completion.py"), str(tmp_path)],
                   check=True, capture_output=True, cwd=ROOT)
    for name in ("lambdactl.bash", "_lambdactl"):
        assert (ROOT / "completion" / name).read_text() == (tmp_path / name).read_text(), (
            f"completion/{name} is stale: run `make completion`")


def test_bash_completion_completes_commands_and_options() -> None:
    script = (
        f"source {ROOT / 'completion/lambdactl.bash'}; "
        "COMP_WORDS=(lambdactl roll); COMP_CWORD=1; _lambdactl; echo ${COMPREPLY[@]}; "
        "COMP_WORDS=(lambdactl logs --fol); COMP_CWORD=2; _lambdactl; echo ${COMPREPLY[@]}"
    )
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == ["rollback", "--follow"]
