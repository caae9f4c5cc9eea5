"""Shared pieces of the reliability tests: a tiny ImageNet-style run.

The fixtures are re-exported by ``conftest.py``.

The run is the real machinery at toy size: the ``ImageNet`` dataset on a
4-class synthetic folder (20 px JPEGs, 6 training images per class), the
random crop/flip transforms, ``LocalImageClassifier`` with AugLocal heads
on a 4-channel CIFAR ResNet-20 (K = 10), ``LocalOptimWrapper`` with SGD,
warm-up + cosine schedule, validation every epoch, and the repository's
``default_runtime.py`` and ImageNet schedule bases (``AtomicCheckpointHook``
and ``ResumableEpochBasedTrainLoop``). Batch 4, so an epoch is 6
iterations and 4 epochs are 24; checkpoints every 4 iterations fall in the
middle of epochs.
"""
import os
import os.path as osp
import subprocess
import sys
from typing import Dict, List, Optional

import pytest
import torch
import torch.nn as nn
from common_utils import TINY_TEST_PIPELINE, TINY_TRAIN_PIPELINE
from mmengine.model import BaseModel
from torch.utils.data import Dataset

from auglocal_det.engine.hooks import EXIT_PREEMPTED  # noqa: F401
from auglocal_det.engine.runner import LocalRunner

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
LAUNCHER = osp.join(osp.dirname(osp.abspath(__file__)),
                    'train_with_faults.py')
CLASSES = ('circle', 'cross', 'square', 'triangle')
ITERS_PER_EPOCH = 6
MAX_EPOCHS = 4
MAX_ITERS = ITERS_PER_EPOCH * MAX_EPOCHS

TINY_CONFIG = '''\
_base_ = [
    {root!r} + '/configs/_base_/schedules/imagenet_bs1024_sgd_cos_200e.py',
    {root!r} + '/configs/_base_/default_runtime.py',
]
default_scope = 'mmengine'  # no need to import mmdet
classes = {classes!r}
model = dict(
    type='LocalImageClassifier',
    backbone=dict(type='LocalCifarResNet', depth=20, base_channels=4),
    aux_head=dict(type='AugLocalAuxHead', depth=2),
    num_classes=len(classes),
    image_size=16)
train_pipeline = {train_pipeline!r}
test_pipeline = {test_pipeline!r}
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(
        type='ImageNet', data_root={data_root!r}, split='train',
        classes=classes, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'),
    dataset=dict(
        type='ImageNet', data_root={data_root!r}, split='val',
        classes=classes, pipeline=test_pipeline))
val_evaluator = dict(type='Accuracy', topk=(1, ))
val_cfg = dict(type='ValLoop')
test_dataloader = None
test_evaluator = None
test_cfg = None
max_epochs = {max_epochs}
train_cfg = dict(max_epochs=max_epochs, val_interval=1)
optim_wrapper = dict(optimizer=dict(lr=0.05))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=5),
    dict(type='CosineAnnealingLR', T_max=max_epochs, by_epoch=True, begin=0,
         end=max_epochs, convert_to_iter_based=True),
]
default_hooks = dict(
    logger=dict(interval=1),
    checkpoint=dict(interval=4, by_epoch=False, max_keep_ckpts=2))
log_processor = dict(window_size=1)
randomness = dict(seed=0, deterministic=True)
'''


@pytest.fixture(scope='session')
def tiny_data_root(tmp_path_factory) -> str:
    """The 4-class synthetic ImageNet folder (6 train, 2 val per class)."""
    from auglocal_det.testing import generate_imagenet_shapes
    root = str(tmp_path_factory.mktemp('data') / 'tiny_imagenet')
    generate_imagenet_shapes(
        root,
        num_train_per_class=ITERS_PER_EPOCH,
        num_val_per_class=2,
        image_size=20,
        classes=CLASSES,
        progress=False)
    return root


@pytest.fixture(scope='session')
def tiny_config(tiny_data_root, tmp_path_factory) -> str:
    """Path of the tiny training config."""
    path = tmp_path_factory.mktemp('configs') / 'tiny_auglocal.py'
    path.write_text(
        TINY_CONFIG.format(
            root=ROOT,
            classes=CLASSES,
            data_root=tiny_data_root,
            max_epochs=MAX_EPOCHS,
            train_pipeline=TINY_TRAIN_PIPELINE,
            test_pipeline=TINY_TEST_PIPELINE))
    return str(path)


def train_env(**faults: str) -> Dict[str, str]:
    """Environment of a training subprocess (one thread, faults set)."""
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS='1',
        MKL_NUM_THREADS='1',
        PYTHONPATH=ROOT + os.pathsep + env.get('PYTHONPATH', ''))
    env.pop('AUGLOCAL_DEBUG', None)
    env.update(faults)
    return env


def train_cmd(config: str, work_dir: str, *args: str) -> List[str]:
    return [sys.executable, LAUNCHER, config, '--work-dir', work_dir, *args]


def run_train(config: str,
              work_dir: str,
              *args: str,
              timeout: float = 240,
              **faults: str) -> subprocess.CompletedProcess:
    """Run the tiny training to its end (or failure) and return it."""
    return subprocess.run(
        train_cmd(config, work_dir, *args),
        env=train_env(**faults),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout)


def spawn_train(config: str, work_dir: str, *args: str,
                **faults: str) -> subprocess.Popen:
    """Start the tiny training in the background."""
    log = open(osp.join(work_dir + '.log'), 'w')
    return subprocess.Popen(
        train_cmd(config, work_dir, *args),
        env=train_env(**faults),
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT)


def read_last_checkpoint(work_dir: str) -> Optional[str]:
    path = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(path):
        return None
    with open(path) as f:
        return f.read().strip() or None


def load(path: str) -> dict:
    return torch.load(path, map_location='cpu', weights_only=False)


def assert_same_state(a: dict, b: dict) -> None:
    """Model weights/buffers and optimizer state equal, bit for bit."""
    assert a['state_dict'].keys() == b['state_dict'].keys()
    for key, value in a['state_dict'].items():
        assert torch.equal(value, b['state_dict'][key]), key
    state_a = a['optimizer']['state']
    state_b = b['optimizer']['state']
    assert state_a.keys() == state_b.keys()
    for idx, entry in state_a.items():
        for name, value in entry.items():
            other = state_b[idx][name]
            if torch.is_tensor(value):
                assert torch.equal(value, other), (idx, name)
            else:
                assert value == other, (idx, name)
    assert a['meta']['iter'] == b['meta']['iter']
    assert a['param_schedulers'] == b['param_schedulers']


# --------------------------------------------------------- in-process toy
_RUNS = iter(range(1000))


class ToyDataset(Dataset):
    metainfo = dict(classes=('a', 'b'))

    def __len__(self):
        return 8

    def __getitem__(self, idx):
        gen = torch.Generator().manual_seed(idx)
        return dict(inputs=torch.randn(3, generator=gen), label=idx % 2)


class ToyModel(BaseModel):

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, inputs, label=None, mode='tensor'):
        logits = self.fc(inputs)
        if mode == 'loss':
            return dict(loss=nn.functional.cross_entropy(logits, label))
        return logits


def toy_runner(work_dir: str,
               max_epochs: int,
               batch_size: int = 4,
               runner_args: Optional[dict] = None,
               **hook_args) -> LocalRunner:
    """An MMEngine run of a linear model on 8 random vectors, with
    ``AtomicCheckpointHook(**hook_args)`` (every epoch by default) and
    ``ResumableEpochBasedTrainLoop``; ``runner_args`` override the
    runner's arguments."""
    hook = dict(type='AtomicCheckpointHook', interval=1, by_epoch=True)
    hook.update(hook_args)
    args = dict(
        experiment_name=f'toy_{next(_RUNS)}',
        model=ToyModel(),
        work_dir=work_dir,
        train_dataloader=dict(
            dataset=ToyDataset(),
            sampler=dict(type='DefaultSampler', shuffle=True),
            collate_fn=dict(type='default_collate'),
            batch_size=batch_size,
            num_workers=0),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        train_cfg=dict(
            type='ResumableEpochBasedTrainLoop', max_epochs=max_epochs),
        default_hooks=dict(checkpoint=hook),
        randomness=dict(seed=0),
        default_scope='mmengine')
    args.update(runner_args or {})
    return LocalRunner(**args)
