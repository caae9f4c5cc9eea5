#!/usr/bin/env bash
# The whole pipeline on embedded synthetic data, on a CPU: set up the
# environment if needed, generate the data sets if missing, pretrain
# ResNet-34 with AugLocal and with BP, export the backbones, fine-tune
# Mask R-CNN from each export and from random init, evaluate with mmdet's
# CocoMetric, print the model-zoo table and the summary (top-1, training
# memory, AP, wall time; also summary.md and summary.png in the work dir).
# Options are passed on to tools/demo.py (--help), e.g. --full.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
bash tools/setup_env.sh
VENV="${VENV:-$ROOT/.venv}"
exec "$VENV/bin/python" tools/demo.py "$@"
