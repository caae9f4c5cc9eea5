"""A bad checkpoint on ``--resume``: one message naming it, where its path
came from and the previous good checkpoint; ``--resume-fallback`` uses
that one."""
import os
import os.path as osp

import pytest
from reliability_utils import LAUNCHER, ROOT, run_train, toy_runner

from auglocal_det.engine.runner import (
    checkpoint_problem,
    resolve_resume_checkpoint,
)
from auglocal_det.errors import InputError, InputFileNotFoundError


@pytest.fixture
def run_dir(tmp_path) -> str:
    """A work dir with epoch_1.pth, epoch_2.pth and last_checkpoint."""
    work_dir = str(tmp_path / 'run')
    toy_runner(work_dir, max_epochs=2).train()
    for epoch in (1, 2):  # distinct modification times, oldest first
        path = osp.join(work_dir, f'epoch_{epoch}.pth')
        os.utime(path, (1_000_000 + epoch, 1_000_000 + epoch))
    return work_dir


def _truncate(path: str) -> None:
    with open(path, 'rb') as f:
        data = f.read()
    with open(path, 'wb') as f:
        f.write(data[:len(data) // 2])


def _flip_byte(path: str) -> None:
    """Corrupt one byte in the middle of the tensor data."""
    with open(path, 'r+b') as f:
        f.seek(osp.getsize(path) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))


def _raises(exc_type, *args, **kwargs) -> str:
    with pytest.raises(exc_type) as info:
        resolve_resume_checkpoint(*args, **kwargs)
    print(f'{type(info.value).__name__}: {info.value}')
    return str(info.value)


def test_good_checkpoint_keeps_mmengine_auto_resume(run_dir):
    assert resolve_resume_checkpoint(run_dir, 'auto') is None
    path = osp.join(run_dir, 'epoch_1.pth')
    assert resolve_resume_checkpoint(run_dir, path) == path
    assert resolve_resume_checkpoint(str(run_dir) + '_new', 'auto') is None


def test_truncated_checkpoint_named_in_last_checkpoint(run_dir):
    bad = osp.join(run_dir, 'epoch_2.pth')
    good = osp.join(run_dir, 'epoch_1.pth')
    _truncate(bad)
    message = _raises(InputError, run_dir, 'auto')
    assert message.startswith(
        f'--resume: the checkpoint {bad!r} (named in '
        f"{osp.join(run_dir, 'last_checkpoint')!r}) is unusable: it is "
        'truncated (')
    assert f'The previous good checkpoint is {good!r}' in message
    assert '--resume-fallback' in message
    # the fallback takes it
    assert resolve_resume_checkpoint(run_dir, 'auto', fallback=True) == good


def test_corrupt_checkpoint_fails_its_checksum(run_dir):
    bad = osp.join(run_dir, 'epoch_2.pth')
    _flip_byte(bad)
    assert 'checksum' in checkpoint_problem(bad)
    message = _raises(InputError, run_dir, bad)
    assert message.startswith(
        f'--resume: the checkpoint {bad!r} given to --resume is unusable: '
        'it is corrupt: the checksum of its member ')


def test_empty_last_checkpoint(run_dir):
    with open(osp.join(run_dir, 'last_checkpoint'), 'w'):
        pass
    message = _raises(InputError, run_dir, 'auto')
    assert 'last_checkpoint' in message and 'is empty' in message
    assert repr(osp.join(run_dir, 'epoch_2.pth')) in message


def test_deleted_target_of_last_checkpoint(run_dir):
    os.remove(osp.join(run_dir, 'epoch_2.pth'))
    message = _raises(InputError, run_dir, 'auto')
    assert 'the file does not exist' in message
    assert "named in '" in message and 'last_checkpoint' in message
    assert repr(osp.join(run_dir, 'epoch_1.pth')) in message


def test_missing_explicit_checkpoint_and_no_fallback(tmp_path):
    message = _raises(InputFileNotFoundError, str(tmp_path),
                      str(tmp_path / 'epoch_9.pth'))
    assert 'There is no other good checkpoint' in message


def test_train_py_prints_one_line(run_dir, tmp_path):
    _truncate(osp.join(run_dir, 'epoch_2.pth'))
    config = tmp_path / 'unused.py'  # the check runs before the model
    config.write_text("model = dict(type='NoSuchModel')\n")
    result = run_train(str(config), run_dir, '--resume', timeout=120)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith('error: --resume: the checkpoint ')
    assert 'The previous good checkpoint is' in lines[0]
    assert LAUNCHER and ROOT  # the tools/train.py of this checkout
