"""Pre-emption signals: checkpoint, one log line, exit status 75.

The end-to-end case (SIGTERM to a real ``tools/train.py`` process, then
``--resume`` equal to an uninterrupted run) is in test_exact_resume.py.
"""
import os
import os.path as osp
import signal

import pytest
import torch
from common_utils import run_gloo_processes
from mmengine.hooks import Hook
from reliability_utils import read_last_checkpoint, toy_runner

from auglocal_det.engine.hooks import (
    EXIT_PREEMPTED,
    PreemptionCheckpointHook,
    TrainingPreempted,
)
from auglocal_det.errors import InputError


class _SignalAt(Hook):
    """Sends ``signum`` to this process after iteration ``at`` (1-based)."""

    priority = 'HIGHEST'

    def __init__(self, at: int, signum: int) -> None:
        self.at = at
        self.signum = signum

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        if runner.iter + 1 == self.at:
            os.kill(os.getpid(), self.signum)


@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGUSR1])
def test_signal_saves_mid_epoch_checkpoint_with_epoch_based_hook(
        tmp_path, signum):
    """Epoch checkpoints (every epoch, 2 iterations each): the signal after
    iteration 3 (the middle of epoch 2) writes ``iter_3.pth`` anyway, names
    it in ``last_checkpoint`` and exits with 75; ``--resume`` then ends the
    run at iteration 6 from that position."""
    work_dir = str(tmp_path)
    previous = signal.getsignal(signum)
    runner = toy_runner(
        work_dir, max_epochs=3,
        runner_args=dict(custom_hooks=[
            _SignalAt(3, signum),
            dict(type='PreemptionCheckpointHook')
        ]))
    with pytest.raises(TrainingPreempted) as info:
        runner.train()
    assert info.value.code == EXIT_PREEMPTED
    assert signal.getsignal(signum) == previous  # handlers given back
    path = osp.join(work_dir, 'iter_3.pth')
    assert read_last_checkpoint(work_dir) == path
    ckpt = torch.load(path, map_location='cpu', weights_only=False)
    assert ckpt['meta']['iter'] == 3 and ckpt['meta']['epoch'] == 1

    resumed = toy_runner(
        work_dir, max_epochs=3, runner_args=dict(resume=True))
    resumed.train()
    assert resumed.iter == 6
    assert read_last_checkpoint(work_dir) == osp.join(work_dir,
                                                      'epoch_3.pth')


def test_no_signal_changes_nothing(tmp_path):
    previous = signal.getsignal(signal.SIGTERM)
    runner = toy_runner(
        str(tmp_path), max_epochs=1,
        runner_args=dict(
            custom_hooks=[dict(type='PreemptionCheckpointHook')]))
    runner.train()
    assert not [n for n in os.listdir(tmp_path) if n.startswith('iter_')]
    assert read_last_checkpoint(str(tmp_path)).endswith('epoch_1.pth')
    assert signal.getsignal(signal.SIGTERM) == previous


def test_unknown_signal_name():
    with pytest.raises(InputError, match='default_hooks.preemption.signals'):
        PreemptionCheckpointHook(signals=('SIGNOPE', ))


def _agreement_worker(rank: int) -> dict:
    """Rank 1 alone receives the signal; both ranks must see it."""
    hook = PreemptionCheckpointHook()
    before = hook.preempted()
    if rank == 1:
        hook._on_signal(signal.SIGUSR1, None)
    return dict(before=before, after=hook.preempted())


def test_every_rank_agrees(tmp_path):
    results = run_gloo_processes(_agreement_worker, 2, tmp_path)
    assert [r['before'] for r in results] == [0, 0]
    assert [r['after'] for r in results] == [signal.SIGUSR1] * 2
