"""The committed stubs must be what `make proto` generates from proto/ today."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO = "proto/lambdad/api/v1/functions.proto"
GENERATED = ["functions_pb2.py", "functions_pb2.pyi", "functions_pb2_grpc.py"]


def test_generated_stubs_are_fresh(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT / 'proto'}",
         f"--python_out={tmp_path}", f"--pyi_out={tmp_path}", f"--grpc_python_out={tmp_path}",
         str(ROOT / PROTO)],
        check=True,
    )
    for name in GENERATED:
        fresh = (tmp_path / "lambdad" / "api" / "v1" / name).read_text()
        committed = (ROOT / "lambdad" / "api" / "v1" / name).read_text()
        assert committed == fresh, f"lambdad/api/v1/{name} is stale: run `make proto`"
