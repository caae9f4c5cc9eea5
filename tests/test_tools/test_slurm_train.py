"""tools/slurm_train.sh: requeue after a pre-emption, with fake srun and
scontrol commands on PATH (no cluster needed)."""
import os
import os.path as osp
import subprocess

from auglocal_det.engine.hooks import EXIT_PREEMPTED

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SCRIPT = osp.join(ROOT, 'tools', 'slurm_train.sh')

FAKE_SRUN = '''#!/usr/bin/env bash
# records its arguments, exits with the next status of $FAKE_STATUS
echo "$*" >> "$FAKE_LOG"
n=$(wc -l < "$FAKE_LOG")
status=$(echo "$FAKE_STATUS" | cut -d, -f"$n")
exit "${status:-0}"
'''
FAKE_SCONTROL = '''#!/usr/bin/env bash
echo "scontrol $*" >> "$FAKE_LOG.scontrol"
exit "${FAKE_SCONTROL_STATUS:-0}"
'''


def _run(tmp_path, statuses, **env):
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir(exist_ok=True)
    for name, text in (('srun', FAKE_SRUN), ('scontrol', FAKE_SCONTROL)):
        path = bin_dir / name
        path.write_text(text)
        path.chmod(0o755)
    log = tmp_path / 'srun.log'
    if log.exists():
        log.unlink()
    full_env = dict(os.environ)
    full_env.pop('SLURM_JOB_ID', None)
    full_env.pop('SLURM_RESTART_COUNT', None)
    full_env.update(
        PATH=f'{bin_dir}{os.pathsep}{os.environ["PATH"]}',
        FAKE_LOG=str(log),
        FAKE_STATUS=','.join(map(str, statuses)),
        GPUS='2', GPUS_PER_NODE='2', **env)
    done = subprocess.run(
        ['bash', SCRIPT, 'gpu', 'job', 'configs/x.py',
         str(tmp_path / 'wd'), '--amp'],
        env=full_env, capture_output=True, text=True, timeout=60)
    calls = log.read_text().splitlines() if log.exists() else []
    return done, calls


def test_login_node_runs_again_with_resume(tmp_path):
    done, calls = _run(tmp_path, [EXIT_PREEMPTED, EXIT_PREEMPTED, 0])
    assert done.returncode == 0, done.stderr
    assert len(calls) == 3
    assert '--resume' not in calls[0] and '--ntasks=2' in calls[0]
    assert '--signal=USR1@300' in calls[0] and '--launcher=slurm' in calls[0]
    assert calls[0].endswith('--launcher=slurm --amp')
    assert all('--launcher=slurm --resume --amp' in c for c in calls[1:])
    assert 'starting again with --resume (attempt 2)' in done.stderr


def test_other_failures_end_the_script(tmp_path):
    done, calls = _run(tmp_path, [1])
    assert done.returncode == 1 and len(calls) == 1


def test_batch_job_is_requeued_and_resumes(tmp_path):
    done, calls = _run(tmp_path, [EXIT_PREEMPTED], SLURM_JOB_ID='42')
    assert done.returncode == 0, done.stderr
    assert len(calls) == 1
    assert (tmp_path / 'srun.log.scontrol').read_text() == \
        'scontrol requeue 42\n'
    # the requeued job runs the script again and continues the run
    (tmp_path / 'wd').mkdir()
    (tmp_path / 'wd' / 'last_checkpoint').write_text('wd/iter_7.pth')
    done, calls = _run(tmp_path, [0], SLURM_JOB_ID='42',
                       SLURM_RESTART_COUNT='1')
    assert done.returncode == 0 and '--resume' in calls[0]
