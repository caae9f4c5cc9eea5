"""One job per work dir; a new run never overwrites an earlier one.

The concurrent case runs two real ``tools/train.py`` processes on one work
dir; the earlier-run cases use the in-process toy run.
"""
import json
import os
import os.path as osp
import runpy
import signal
import sys
import time

import pytest
from reliability_utils import (
    ROOT,
    read_last_checkpoint,
    run_train,
    spawn_train,
    toy_runner,
)

from auglocal_det.engine.hooks import WorkDirLock
from auglocal_det.errors import InputError

pytestmark = pytest.mark.timeout(300)

LOCK_HOOK = [dict(type='WorkDirLockHook')]


def _owner(work_dir: str) -> dict:
    try:
        with open(osp.join(work_dir, '.work_dir.lock')) as f:
            return json.loads(f.read() or '{}')
    except (OSError, ValueError):
        return {}


def test_second_job_in_the_same_work_dir_stops_at_once(
        tiny_config, tmp_path):
    work_dir = str(tmp_path / 'shared')
    first = spawn_train(tiny_config, work_dir, FAULT_ITER_SLEEP='3')
    try:
        deadline = time.time() + 120
        while _owner(work_dir).get('pid') != first.pid:
            assert first.poll() is None, open(work_dir + '.log').read()
            assert time.time() < deadline, 'the first job took no lock'
            time.sleep(0.05)
        before = read_last_checkpoint(work_dir)

        second = run_train(tiny_config, work_dir, timeout=120)
        message = second.stderr.strip().splitlines()
        print(message[0])
        assert second.returncode == 1
        assert message[0].startswith(
            f'error: work dir {work_dir!r} is in use by another training '
            'job (host ')
        assert f'pid {first.pid}, started ' in message[0]
        assert first.poll() is None  # the first job trains on
        now = read_last_checkpoint(work_dir)
        assert now is None or now == before or now.startswith(work_dir)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    # the kernel released the dead job's lock: a --resume may take it
    lock = WorkDirLock(work_dir)
    assert lock.acquire()
    lock.release()


def test_new_run_over_an_earlier_run_is_refused(tmp_path):
    work_dir = str(tmp_path)
    toy_runner(work_dir, max_epochs=1,
               runner_args=dict(custom_hooks=LOCK_HOOK)).train()
    assert read_last_checkpoint(work_dir).endswith('epoch_1.pth')
    mtime = osp.getmtime(osp.join(work_dir, 'epoch_1.pth'))

    runner = toy_runner(work_dir, max_epochs=2,
                        runner_args=dict(custom_hooks=LOCK_HOOK))
    with pytest.raises(InputError) as info:
        runner.train()
    print(f'InputError: {info.value}')
    assert str(info.value).startswith(
        f'work dir {work_dir!r} already holds the checkpoints of an earlier '
        'run (epoch_1.pth, last_checkpoint; last_checkpoint names ')
    assert '--resume' in str(info.value) and '--overwrite' in str(info.value)
    assert osp.getmtime(osp.join(work_dir, 'epoch_1.pth')) == mtime

    # --resume continues it
    toy_runner(work_dir, max_epochs=2,
               runner_args=dict(custom_hooks=LOCK_HOOK, resume=True)).train()
    assert read_last_checkpoint(work_dir).endswith('epoch_2.pth')


def test_overwrite_removes_the_earlier_run(tmp_path):
    work_dir = str(tmp_path)
    toy_runner(work_dir, max_epochs=2,
               runner_args=dict(custom_hooks=LOCK_HOOK)).train()
    runner = toy_runner(
        work_dir, max_epochs=1,
        runner_args=dict(
            custom_hooks=[dict(type='WorkDirLockHook', overwrite=True)]))
    runner.train()
    assert not osp.exists(osp.join(work_dir, 'epoch_2.pth'))
    assert read_last_checkpoint(work_dir).endswith('epoch_1.pth')


def test_lock_is_exclusive_and_names_its_holder(tmp_path):
    first = WorkDirLock(str(tmp_path))
    assert first.acquire()
    try:
        with pytest.raises(InputError, match=f'pid {os.getpid()}, started'):
            WorkDirLock(str(tmp_path)).acquire()
    finally:
        first.release()
    again = WorkDirLock(str(tmp_path))
    assert again.acquire()
    again.release()


def test_train_py_overwrite_option(tiny_config, tmp_path):
    """``--overwrite`` sets the hook's option; it contradicts --resume."""
    train = runpy.run_path(osp.join(ROOT, 'tools', 'train.py'))
    argv = sys.argv
    try:
        sys.argv = ['train.py', tiny_config, '--work-dir', str(tmp_path),
                    '--overwrite']
        cfg = train['build_config'](train['parse_args']())
        assert cfg.default_hooks.work_dir_lock == dict(
            type='WorkDirLockHook', overwrite=True)
        sys.argv += ['--resume']
        with pytest.raises(InputError, match='--overwrite starts a new run'):
            train['build_config'](train['parse_args']())
    finally:
        sys.argv = argv
