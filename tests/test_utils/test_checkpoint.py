"""Resume and load_from of full MMEngine checkpoints under torch >= 2.6."""
import os.path as osp
import pickle

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.model import BaseModel
from mmengine.runner import Runner
from mmengine.runner.checkpoint import CheckpointLoader
from torch.utils.data import Dataset

import auglocal_det  # noqa: F401  (registers the runner)
from auglocal_det.engine.runner import (
    LocalRunner,
    load_local_checkpoint,
    safe_local_checkpoints,
)


class ToyDataset(Dataset):
    metainfo = dict(classes=('a', 'b'))

    def __init__(self, n: int = 8):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 4, generator=g)
        self.y = torch.randint(0, 2, (n, ), generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return dict(inputs=self.x[i], labels=self.y[i])


class ToyModel(BaseModel):

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, inputs, labels=None, mode='tensor'):
        inputs = torch.stack(inputs) if isinstance(inputs, list) else inputs
        out = self.fc(inputs)
        if mode == 'loss':
            labels = torch.stack(labels) if isinstance(labels,
                                                       list) else labels
            return dict(loss=nn.functional.cross_entropy(out, labels))
        return out


_RUNS = iter(range(1000))


def _runner(work_dir, max_epochs, runner_cls=LocalRunner, **kwargs):
    return runner_cls(
        experiment_name=f'toy_{next(_RUNS)}',
        model=ToyModel(),
        work_dir=work_dir,
        train_dataloader=dict(
            dataset=ToyDataset(),
            sampler=dict(type='DefaultSampler', shuffle=True),
            batch_size=4,
            num_workers=0),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9)),
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=1),
            logger=dict(type='LoggerHook', interval=1)),
        randomness=dict(seed=0),
        default_scope='mmengine',
        **kwargs)


def test_checkpoint_holds_numpy_objects_that_weights_only_rejects(tmp_path):
    runner = _runner(str(tmp_path), max_epochs=1)
    runner.train()
    ckpt = osp.join(str(tmp_path), 'epoch_1.pth')
    # The message hub stores numpy scalars: the default safe unpickler of
    # torch >= 2.6 refuses the file, which is the failure being fixed.
    with pytest.raises(pickle.UnpicklingError):
        torch.load(ckpt, weights_only=True)
    data = load_local_checkpoint(ckpt)
    assert 'message_hub' in data and 'meta' in data
    scalars = data['message_hub']['log_scalars']
    assert any(
        isinstance(v, np.generic) for buf in scalars.values()
        for v in buf.data[0])


def test_runner_resume_restores_state(tmp_path):
    first = _runner(str(tmp_path), max_epochs=2)
    first.train()
    final_weight = first.model.fc.weight.detach().clone()

    resumed = _runner(
        str(tmp_path),
        max_epochs=3,
        resume=True,
        load_from=osp.join(str(tmp_path), 'epoch_2.pth'))
    resumed.train()
    assert resumed.iter == 3 * 2
    # the resumed run starts from epoch 2's weights and momentum buffers
    assert not torch.equal(resumed.model.fc.weight, final_weight)

    # resuming at epoch 2 and running to 3 equals a straight 3-epoch run
    straight = _runner(str(tmp_path / 'straight'), max_epochs=3)
    straight.train()
    torch.testing.assert_close(
        resumed.model.fc.weight, straight.model.fc.weight, rtol=0, atol=0)


def test_load_from_full_checkpoint(tmp_path):
    _runner(str(tmp_path), max_epochs=1).train()
    runner = _runner(
        str(tmp_path / 'second'),
        max_epochs=1,
        load_from=osp.join(str(tmp_path), 'epoch_1.pth'))
    runner.load_or_resume()
    saved = load_local_checkpoint(osp.join(str(tmp_path), 'epoch_1.pth'))
    torch.testing.assert_close(runner.model.fc.weight,
                               saved['state_dict']['fc.weight'])


def test_loader_is_scoped_to_load_or_resume(tmp_path):
    """Local files are read with the package's loader only inside the
    context (which LocalRunner opens around load_or_resume); MMEngine's
    loader is back afterwards, and remote schemes are never affected."""
    local = str(tmp_path / 'x.pth')
    before = CheckpointLoader._get_checkpoint_loader(local)
    assert before is not load_local_checkpoint
    with safe_local_checkpoints():
        assert CheckpointLoader._get_checkpoint_loader(
            local) is load_local_checkpoint
        assert CheckpointLoader._get_checkpoint_loader(
            'https://example.com/x.pth') is not load_local_checkpoint
    assert CheckpointLoader._get_checkpoint_loader(local) is before

    # MMEngine's own Runner, outside the context, refuses the full
    # checkpoint: importing the package changes nothing for it
    _runner(str(tmp_path), max_epochs=1).train()
    plain = _runner(
        str(tmp_path / 'plain'),
        max_epochs=1,
        runner_cls=Runner,
        load_from=osp.join(str(tmp_path), 'epoch_1.pth'))
    with pytest.raises(pickle.UnpicklingError):
        plain.load_or_resume()


def test_clear_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        load_local_checkpoint(str(tmp_path / 'missing.pth'))
    broken = tmp_path / 'broken.pth'
    broken.write_bytes(b'not a checkpoint')
    with pytest.raises(RuntimeError, match='broken.pth'):
        load_local_checkpoint(str(broken))
