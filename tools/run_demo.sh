#!/usr/bin/env bash
# The pretraining pipeline on embedded synthetic data, on a CPU in minutes:
# set up the environment if needed, generate the data set if missing,
# pretrain ResNet-34 with AugLocal, export the backbone and report val
# top-1. Options are passed on to tools/demo.py (--help); the detection
# stage is tools/demo_det.py.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
bash tools/setup_env.sh
VENV="${VENV:-$ROOT/.venv}"
exec "$VENV/bin/python" tools/demo.py "$@"
