#!/usr/bin/env bash
# One command on a bare GPU machine: build the CUDA extension, run the CUDA tests, time it all.
# Usage: benchmarks/gpu_check.sh [--out DIR] [--budget SECONDS] [--dry-run]   (see docs/benchmarks.md)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" GALHPC_PROGRESS=0
exec "${PYTHON:-python3}" benchmarks/gpu_check.py "$@"
