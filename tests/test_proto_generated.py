"""The committed generated modules are exactly what the pinned generator makes today."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ("meterpipe_pb2.py", "meterpipe_pb2.pyi", "meterpipe_pb2_grpc.py")


def test_committed_generated_code_matches_a_fresh_generation(tmp_path):
    """Regenerating from proto/meterpipe.proto yields identical files (see docs/protocol.md)."""
    (tmp_path / "proto").mkdir()
    shutil.copy(ROOT / "proto" / "meterpipe.proto", tmp_path / "proto")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I.",
            "--python_out=.",
            "--pyi_out=.",
            "--grpc_python_out=.",
            "proto/meterpipe.proto",
        ],
        cwd=tmp_path,
        check=True,
    )
    for name in GENERATED:
        fresh = (tmp_path / "proto" / name).read_text()
        committed = (ROOT / "proto" / name).read_text()
        assert fresh == committed, f"proto/{name} is stale: run scripts/generate-proto.sh"
