#!/usr/bin/env bash
# Verify the cuda backend on a GPU machine in one command (see run_all.py --help):
#   benchmarks/gpu/run_all.sh --out DIR      |   benchmarks/gpu/run_all.sh --dry-run
exec "${PYTHON:-python3}" "$(dirname "${BASH_SOURCE[0]}")/run_all.py" "$@"
