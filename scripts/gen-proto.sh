#!/usr/bin/env bash
# Regenerates src/hutch/shared/proto from spec/envd/*.proto (never edit the output by hand).
# Needs the `gen` extra: pip install -e '.[gen]'
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python="${PYTHON:-.venv/bin/python}"
bin="$(dirname "$python")"
out=src/hutch/shared/proto
PATH="$bin:$PATH" "$python" -m grpc_tools.protoc -Ispec/envd \
  --py_out="$out" --connectrpc_out="$out" \
  spec/envd/filesystem/filesystem.proto spec/envd/process/process.proto
