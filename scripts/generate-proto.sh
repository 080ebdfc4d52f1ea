#!/usr/bin/env bash
# Regenerate proto/meterpipe_pb2*.py from proto/meterpipe.proto with the pinned grpcio-tools.
# The generated modules are committed; tests/test_proto_generated.py fails when they are stale.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. \
  proto/meterpipe.proto
