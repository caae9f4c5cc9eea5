#!/usr/bin/env bash
# Set up (or verify) the environment, then run the whole test suite.
# Usage: bash tools/run_tests.sh [extra pytest arguments]
# A run that collects no test counts as a failure.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
bash tools/setup_env.sh || exit $?
VENV="${VENV:-$ROOT/.venv}"
"$VENV/bin/python" -m pytest tests --timeout=1200 -p no:cacheprovider "$@"
rc=$?
if [[ $rc -eq 5 ]]; then
    echo "run_tests: pytest collected no tests; treating this as a failure" >&2
    exit 1
fi
exit $rc
