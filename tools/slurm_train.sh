#!/usr/bin/env bash
# Train on a SLURM cluster, one task per GPU, and come back after
# pre-emption.
#
# Usage: [GPUS=8] bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG \
#            WORK_DIR [train.py options]
#
# Environment: GPUS (tasks in all, default 8), GPUS_PER_NODE (8),
# CPUS_PER_TASK (5), SRUN_ARGS (extra srun options), SIGNAL_LEAD (seconds
# before the time limit at which SLURM sends SIGUSR1, default 300),
# MAX_REQUEUES (default 100).
#
# tools/train.py exits with status 75 after a pre-emption signal (SIGTERM,
# or SIGUSR1 before the time limit) once it has saved a checkpoint. Then:
# - inside a batch job (sbatch): the job is requeued with `scontrol
#   requeue`; SLURM runs this script again and it continues with --resume;
# - run from a login node (or where the requeue fails): srun is started
#   again with --resume.
# Any other status ends the script with that status.
set -uo pipefail

if [[ $# -lt 4 ]]; then
    echo "usage: $0 PARTITION JOB_NAME CONFIG WORK_DIR [train.py options]" >&2
    exit 2
fi
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
WORK_DIR=$4
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-""}
SIGNAL_LEAD=${SIGNAL_LEAD:-300}
MAX_REQUEUES=${MAX_REQUEUES:-100}
EXIT_PREEMPTED=75
ROOT="$(cd "$(dirname "$0")/.." && pwd)"

resume=()
# a requeued batch job continues the run it saved
if [[ ${SLURM_RESTART_COUNT:-0} -gt 0 && -f "$WORK_DIR/last_checkpoint" ]]; then
    resume=(--resume)
fi

attempt=0
while true; do
    # shellcheck disable=SC2086
    PYTHONPATH="$ROOT:${PYTHONPATH:-}" \
    srun -p "$PARTITION" \
        --job-name="$JOB_NAME" \
        --gres=gpu:"$GPUS_PER_NODE" \
        --ntasks="$GPUS" \
        --ntasks-per-node="$GPUS_PER_NODE" \
        --cpus-per-task="$CPUS_PER_TASK" \
        --kill-on-bad-exit=1 \
        --signal=USR1@"$SIGNAL_LEAD" \
        $SRUN_ARGS \
        python -u "$ROOT/tools/train.py" "$CONFIG" --work-dir="$WORK_DIR" \
        --launcher=slurm "${resume[@]}" "${@:5}"
    rc=$?
    if [[ $rc -ne $EXIT_PREEMPTED ]]; then
        exit $rc
    fi
    attempt=$((attempt + 1))
    if [[ $attempt -gt $MAX_REQUEUES ]]; then
        echo "slurm_train: pre-empted $attempt times; giving up" >&2
        exit $rc
    fi
    if [[ -n "${SLURM_JOB_ID:-}" ]]; then
        echo "slurm_train: pre-empted, checkpoint saved; requeueing job" \
            "$SLURM_JOB_ID" >&2
        # a batch job can be requeued; in salloc this fails: run again here
        if scontrol requeue "$SLURM_JOB_ID"; then
            exit 0
        fi
    fi
    echo "slurm_train: pre-empted, checkpoint saved; starting again with" \
        "--resume (attempt $attempt)" >&2
    resume=(--resume)
done
