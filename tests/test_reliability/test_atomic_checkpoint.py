"""AtomicCheckpointHook and the atomic local backend.

The save order is checked on a real (toy) MMEngine run: a failed save, such
as a full disk, must leave the previous checkpoint, ``last_checkpoint``
and the hook's bookkeeping as they were, even with ``max_keep_ckpts=1``
(MMEngine's hook deletes the old checkpoint before writing the new one).
"""
import errno
import glob
import os
import os.path as osp
import stat
from contextlib import contextmanager
from unittest import mock

import pytest
import torch
from mmengine.evaluator import BaseMetric
from mmengine.fileio import get_file_backend
from reliability_utils import ToyDataset, ToyModel, toy_runner

from auglocal_det.engine.hooks import (
    AtomicCheckpointHook,
    AtomicLocalBackend,
    CheckpointWriteError,
)
from auglocal_det.engine.hooks import atomic_checkpoint_hook as ach
from auglocal_det.registry import HOOKS


@contextmanager
def fail_writes_of(name: str, error: int = errno.ENOSPC):
    """Writes of the file ``name`` put half their bytes on disk and then
    fail with ``OSError(error)``, as a file system does when it fills up.
    """
    real_write = ach._write_bytes

    def write(f, data):
        target = osp.basename(os.readlink(f'/proc/self/fd/{f.fileno()}'))
        if not target.startswith(f'.{name}.'):
            return real_write(f, data)
        f.write(data[:len(data) // 2])
        raise OSError(error, os.strerror(error))

    with mock.patch.object(ach, '_write_bytes', write):
        yield


def _last_checkpoint(work_dir: str) -> str:
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        return f.read()


def test_build_from_registry():
    hook = HOOKS.build(dict(type='AtomicCheckpointHook', interval=2))
    assert isinstance(hook, AtomicCheckpointHook) and hook.interval == 2
    backend = get_file_backend(backend_args=dict(backend='atomic_local'))
    assert isinstance(backend, AtomicLocalBackend)


def test_atomic_write_bytes(tmp_path):
    path = str(tmp_path / 'sub' / 'file.bin')
    ach.atomic_write_bytes(path, b'old')
    ach.atomic_write_bytes(path, b'new content')
    with open(path, 'rb') as f:
        assert f.read() == b'new content'
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask
    assert os.listdir(osp.dirname(path)) == ['file.bin']

    with fail_writes_of('file.bin'), pytest.raises(OSError) as info:
        ach.atomic_write_bytes(path, b'x' * 1000)
    assert info.value.errno == errno.ENOSPC
    message = str(info.value)
    assert 'no space left on device while writing' in message
    assert path in message and '1000 B to write' in message
    assert 'free on the file system of' in message
    with open(path, 'rb') as f:
        assert f.read() == b'new content'  # untouched
    assert os.listdir(osp.dirname(path)) == ['file.bin']  # no temp file

    backend = AtomicLocalBackend()
    backend.put_text('text', path)
    assert backend.get_text(path) == 'text'


def test_rotation_and_last_checkpoint(tmp_path):
    work_dir = str(tmp_path)
    toy_runner(work_dir, max_epochs=3, max_keep_ckpts=2).train()
    names = sorted(n for n in os.listdir(work_dir) if n.endswith('.pth'))
    assert names == ['epoch_2.pth', 'epoch_3.pth']
    assert _last_checkpoint(work_dir) == osp.join(work_dir, 'epoch_3.pth')
    assert not glob.glob(osp.join(work_dir, '.*.tmp'))


def test_disk_full_keeps_previous_checkpoint(tmp_path):
    """``max_keep_ckpts=1``: epoch 2's save fails half-way; epoch 1's
    checkpoint (which MMEngine's hook would already have deleted) and
    ``last_checkpoint`` are intact, the partial file is gone, and the
    error says that the disk is full, where, and what to do."""
    work_dir = str(tmp_path)
    runner = toy_runner(work_dir, max_epochs=2, max_keep_ckpts=1)
    with fail_writes_of('epoch_2.pth'), \
            pytest.raises(CheckpointWriteError) as info:
        runner.train()
    previous = osp.join(work_dir, 'epoch_1.pth')
    message = str(info.value)
    print(message)  # quoted in docs/reliability.md
    assert info.value.errno == errno.ENOSPC
    assert isinstance(info.value, OSError)
    assert 'saving a checkpoint failed: no space left on device while ' \
        f"writing '{osp.join(work_dir, 'epoch_2.pth')}'" in message
    assert f'free on the file system of {work_dir!r}' in message
    assert f'The latest complete checkpoint is still {previous!r}' \
        in message
    assert 'max_keep_ckpts' in message and '--resume' in message

    left = {n for n in os.listdir(work_dir) if not n.startswith('2')}
    assert left == {'epoch_1.pth', 'last_checkpoint'}  # no partial file
    assert _last_checkpoint(work_dir) == previous
    ckpt = torch.load(previous, weights_only=False)
    assert ckpt['meta']['epoch'] == 1
    hook = next(h for h in runner.hooks
                if isinstance(h, AtomicCheckpointHook))
    assert hook.last_ckpt == previous and list(hook.keep_ckpt_ids) == [1]
    assert runner.message_hub.get_info('keep_ckpt_ids') == [1]
    assert runner.message_hub.get_info('last_ckpt') == previous


def test_failed_last_checkpoint_write_keeps_old_checkpoints(tmp_path):
    """If ``last_checkpoint`` cannot be rewritten, nothing is rotated out,
    so the checkpoint it still names exists."""
    work_dir = str(tmp_path)
    runner = toy_runner(work_dir, max_epochs=2, max_keep_ckpts=1)
    with mock.patch.object(
            ach, 'atomic_write_bytes',
            side_effect=[None, OSError(errno.EIO, 'I/O error')]), \
            mock.patch.object(ach.AtomicLocalBackend, 'put',
                              lambda self, obj, path: _plain_put(obj, path)),\
            pytest.raises(CheckpointWriteError, match='last_checkpoint'):
        runner.train()
    assert osp.isfile(osp.join(work_dir, 'epoch_1.pth'))
    assert osp.isfile(osp.join(work_dir, 'epoch_2.pth'))


def _plain_put(obj: bytes, path: str) -> None:
    with open(path, 'wb') as f:
        f.write(obj)


def test_stale_temp_files_removed_and_resume(tmp_path):
    work_dir = str(tmp_path)
    toy_runner(work_dir, max_epochs=1).train()
    stale = osp.join(work_dir, '.epoch_2.pth.abcd1234.tmp')
    with open(stale, 'wb') as f:
        f.write(b'partial')
    other = osp.join(work_dir, 'notes.tmp')
    open(other, 'w').close()
    runner = toy_runner(work_dir, max_epochs=2)
    runner._resume = True
    runner.train()
    assert not osp.exists(stale) and osp.exists(other)
    assert _last_checkpoint(work_dir) == osp.join(work_dir, 'epoch_2.pth')


def test_remote_out_dir_keeps_mmengine_behaviour():
    hook = AtomicCheckpointHook(interval=1)
    assert not hook._use_atomic_backend('s3://bucket/run')
    hook = AtomicCheckpointHook(interval=1, backend_args=dict(backend='local'))
    assert hook._use_atomic_backend('/tmp/run')
    assert hook.backend_args == dict(backend='atomic_local')


class _RisingMetric(BaseMetric):
    """A metric that improves at every evaluation."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def process(self, data_batch, data_samples):
        self.results.append(0)

    def compute_metrics(self, results):
        self.calls += 1
        return dict(acc=float(self.calls))


class _ToyValModel(ToyModel):

    def val_step(self, data):
        return [None]


def test_best_checkpoint_replaced_only_after_the_new_one_is_written(
        tmp_path):
    work_dir = str(tmp_path)
    runner = toy_runner(
        work_dir,
        max_epochs=3,
        runner_args=dict(
            model=_ToyValModel(),
            val_dataloader=dict(
                dataset=ToyDataset(),
                sampler=dict(type='DefaultSampler', shuffle=False),
                batch_size=4),
            val_cfg=dict(type='ValLoop'),
            val_evaluator=[_RisingMetric()]),
        save_best='acc',
        rule='greater')
    with fail_writes_of('best_acc_epoch_3.pth'), \
            pytest.raises(CheckpointWriteError):
        runner.train()
    best = sorted(n for n in os.listdir(work_dir) if n.startswith('best_'))
    assert best == ['best_acc_epoch_2.pth']  # the previous best is kept
    assert not glob.glob(osp.join(work_dir, '.*.tmp'))
