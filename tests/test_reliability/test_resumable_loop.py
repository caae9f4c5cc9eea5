"""ResumableEpochBasedTrainLoop on a toy run (in process)."""
import os.path as osp

import pytest
import torch
from mmengine.registry import LOOPS
from reliability_utils import toy_runner

from auglocal_det.engine.runner import (
    ResumableEpochBasedTrainLoop,
    iteration_seeds,
)


def test_registered():
    assert LOOPS.get('ResumableEpochBasedTrainLoop') is \
        ResumableEpochBasedTrainLoop


def test_iteration_seeds():
    assert iteration_seeds(0, 5) == iteration_seeds(0, 5)
    seeds = {iteration_seeds(0, i) for i in range(100)}
    seeds |= {iteration_seeds(1, i) for i in range(100)}
    assert len(seeds) == 200
    py_seed, np_seed, torch_seed = iteration_seeds(2**40, 3)
    assert 0 <= np_seed < 2**32 and 0 <= torch_seed < 2**64


def _run_to_end(work_dir, resume_from=None, batch_size=4, max_epochs=3,
                **hook_args):
    runner = toy_runner(
        work_dir, max_epochs=max_epochs, batch_size=batch_size, **hook_args)
    if resume_from is not None:
        runner._resume, runner._load_from = True, resume_from
    runner.train()
    return runner


def test_mid_epoch_resume_skips_trained_batches(tmp_path):
    """Epochs of 2 batches: ``iter_3.pth`` is written after batch 1 of
    epoch 2. The resumed run trains the 3 remaining iterations (MMEngine's
    loop would train epoch 2 again from its first batch, 4 iterations) and
    ends with the weights of the straight run."""
    straight = _run_to_end(str(tmp_path / 'a'), by_epoch=False, interval=3)
    assert straight.iter == 6
    resumed = _run_to_end(
        str(tmp_path / 'b'),
        resume_from=osp.join(str(tmp_path / 'a'), 'iter_3.pth'))
    assert resumed.iter == 6 and resumed.epoch == 3
    assert torch.equal(resumed.model.fc.weight, straight.model.fc.weight)


def test_mid_epoch_resume_with_other_batch_size_is_refused(tmp_path):
    _run_to_end(str(tmp_path / 'a'), by_epoch=False, interval=3)
    with pytest.raises(ValueError) as info:
        _run_to_end(
            str(tmp_path / 'b'),
            batch_size=2,
            resume_from=osp.join(str(tmp_path / 'a'), 'iter_3.pth'))
    message = str(info.value)
    print(message)  # quoted in docs/reliability.md
    assert 'cannot resume in the middle of epoch 2' in message
    assert 'after batch 1 of 2' in message
    assert 'now has 4 batches per epoch' in message
    assert 'train_dataloader.batch_size' in message


def test_epoch_end_resume_with_other_batch_size_is_allowed(tmp_path):
    _run_to_end(str(tmp_path / 'a'), max_epochs=1)
    resumed = _run_to_end(
        str(tmp_path / 'b'),
        batch_size=2,
        max_epochs=2,
        resume_from=osp.join(str(tmp_path / 'a'), 'epoch_1.pth'))
    assert resumed.epoch == 2 and resumed.iter == 2 + 4
