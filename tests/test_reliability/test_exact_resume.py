"""A killed and resumed ``tools/train.py`` run equals an uninterrupted one.

Each test SIGKILLs (or pre-empts with SIGTERM) a real training process
(the tiny run of conftest.py), resumes it with ``--resume`` and compares
the final checkpoint with that of an uninterrupted run bit for bit:
weights and buffers of the network and of the auxiliary heads, optimizer
state, iteration counter and learning-rate schedule.
"""
import glob
import os.path as osp
import random
import signal
import subprocess
import time

import pytest
from reliability_utils import (
    EXIT_PREEMPTED,
    MAX_ITERS,
    assert_same_state,
    load,
    read_last_checkpoint,
    run_train,
    spawn_train,
)

pytestmark = pytest.mark.timeout(300)


class _Reference:
    """The uninterrupted run, started in the background at once."""

    def __init__(self, config: str, work_dir: str) -> None:
        self.work_dir = work_dir
        self.proc = spawn_train(config, work_dir)
        self._state = None

    def state(self) -> dict:
        if self._state is None:
            assert self.proc.wait(timeout=240) == 0, open(self.work_dir +
                                                          '.log').read()
            self._state = load(osp.join(self.work_dir,
                                        f'iter_{MAX_ITERS}.pth'))
        return self._state


@pytest.fixture(scope='module')
def reference(tiny_config, tmp_path_factory):
    ref = _Reference(tiny_config, str(tmp_path_factory.mktemp('reference')))
    yield ref
    if ref.proc.poll() is None:
        ref.proc.kill()


def _kill_after(proc: subprocess.Popen, work_dir: str, checkpoint: str,
                timeout: float = 200) -> None:
    """SIGKILL ``proc`` a random moment after ``checkpoint`` is saved."""
    deadline = time.time() + timeout
    while not (read_last_checkpoint(work_dir) or '').endswith(checkpoint):
        assert proc.poll() is None, 'training ended before it was killed'
        assert time.time() < deadline, f'no {checkpoint} in {work_dir}'
        time.sleep(0.05)
    time.sleep(random.uniform(0.0, 0.5))
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL


def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(
        reference, tiny_config, tmp_path):
    """Iteration-based checkpoints (every 4 iterations, epochs of 6): the
    run is killed while training epoch 2, after ``iter_8.pth`` (written
    after batch 2 of epoch 2); the resumed run skips the two batches
    already trained and ends with the same weights."""
    work_dir = str(tmp_path / 'killed')
    proc = spawn_train(tiny_config, work_dir, FAULT_ITER_SLEEP='0.2')
    _kill_after(proc, work_dir, 'iter_8.pth')
    last = read_last_checkpoint(work_dir)
    assert not osp.exists(osp.join(work_dir, f'iter_{MAX_ITERS}.pth'))

    resumed = run_train(tiny_config, work_dir, '--resume')
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = resumed.stdout + resumed.stderr
    assert f'Auto resumed from the latest checkpoint {last}' in log
    if last.endswith('iter_8.pth'):
        assert 'Resuming in epoch 2 after batch 2 of 6' in log
    assert_same_state(
        reference.state(),
        load(osp.join(work_dir, f'iter_{MAX_ITERS}.pth')))


def test_sigkill_during_save_then_resume_uses_previous_checkpoint(
        reference, tiny_config, tmp_path):
    """Epoch-based checkpoints: the process kills itself halfway through
    writing ``epoch_3.pth``. ``last_checkpoint`` still names the complete
    ``epoch_2.pth``, ``--resume`` continues from it (and removes the
    partial file) and the run ends with the weights of the uninterrupted
    run."""
    work_dir = str(tmp_path / 'killed_in_save')
    by_epoch = ('--cfg-options', 'default_hooks.checkpoint.by_epoch=True',
                'default_hooks.checkpoint.interval=1')
    crashed = run_train(
        tiny_config, work_dir, *by_epoch, FAULT_KILL_IN_SAVE='epoch_3.pth')
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-3000:]

    partial = glob.glob(osp.join(work_dir, '.epoch_3.pth.*.tmp'))
    assert len(partial) == 1 and osp.getsize(partial[0]) > 0
    assert not osp.exists(osp.join(work_dir, 'epoch_3.pth'))
    previous = osp.join(work_dir, 'epoch_2.pth')
    assert read_last_checkpoint(work_dir) == previous
    assert load(previous)['meta']['epoch'] == 2  # complete and readable

    resumed = run_train(tiny_config, work_dir, *by_epoch, '--resume')
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = resumed.stdout + resumed.stderr
    assert f'Auto resumed from the latest checkpoint {previous}' in log
    assert 'the partial file of a save that was interrupted' in log
    assert not glob.glob(osp.join(work_dir, '.*.tmp'))
    assert_same_state(reference.state(),
                      load(osp.join(work_dir, 'epoch_4.pth')))


def test_sigterm_at_any_iteration_then_resume_equals_uninterrupted(
        reference, tiny_config, tmp_path):
    """Pre-emption: SIGTERM at a random moment after ``iter_4.pth``. The
    process finishes its iteration, saves ``iter_<N>.pth`` (N the iteration
    it was in, usually not a multiple of the checkpoint interval), names it
    in ``last_checkpoint``, logs one line and exits with status 75; the
    resumed run ends with the weights of the uninterrupted run."""
    work_dir = str(tmp_path / 'preempted')
    proc = spawn_train(tiny_config, work_dir, FAULT_ITER_SLEEP='0.2')
    deadline = time.time() + 200
    while not (read_last_checkpoint(work_dir) or '').endswith('iter_4.pth'):
        assert proc.poll() is None, open(work_dir + '.log').read()[-3000:]
        assert time.time() < deadline, 'no iter_4.pth'
        time.sleep(0.05)
    time.sleep(random.uniform(0.0, 1.5))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == EXIT_PREEMPTED, open(work_dir +
                                                         '.log').read()[-3000:]
    log = open(work_dir + '.log').read()
    lines = [ln for ln in log.splitlines() if 'Pre-empted by SIGTERM' in ln]
    assert len(lines) == 1, log[-3000:]
    print(lines[0])
    last = read_last_checkpoint(work_dir)
    step = int(osp.basename(last)[len('iter_'):-len('.pth')])
    assert 4 < step < MAX_ITERS and f'saved {last!r}' in lines[0]
    assert load(last)['meta']['iter'] == step

    resumed = run_train(tiny_config, work_dir, '--resume')
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f'Auto resumed from the latest checkpoint {last}' in (
        resumed.stdout + resumed.stderr)
    assert_same_state(
        reference.state(),
        load(osp.join(work_dir, f'iter_{MAX_ITERS}.pth')))


@pytest.mark.parametrize('host', ['cpu', 'file'])
def test_heads_in_host_memory_resume_equals_the_plain_run(
        reference, tiny_config, tmp_path, host):
    """The auxiliary heads resting in host memory between uses
    (``model.aux_head_offload``, with the per-layer step it needs), in
    memory or in memory-mapped files: a run killed after ``iter_4.pth``
    and resumed ends with the weights and optimizer state of the
    uninterrupted run that keeps the heads in place and steps once per
    iteration, bit for bit (validation and checkpoints read the heads from
    their host copies)."""
    options = ('--cfg-options', f"model.aux_head_offload.host='{host}'",
               'optim_wrapper.type=LayerwiseLocalOptimWrapper')
    work_dir = str(tmp_path / 'offload')
    proc = spawn_train(tiny_config, work_dir, *options)
    _kill_after(proc, work_dir, 'iter_4.pth')
    resumed = run_train(tiny_config, work_dir, *options, '--resume')
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_state(
        reference.state(),
        load(osp.join(work_dir, f'iter_{MAX_ITERS}.pth')))
