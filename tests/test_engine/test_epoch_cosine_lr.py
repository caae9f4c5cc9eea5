"""EpochCosineLR and the paper configs' schedules against the learning
rates of the official training scripts.

The references below are written from the scripts' formulas alone and share
no code with the scheduler: the small-image scripts set, at the start of
epoch n = 1 .. E, ``0.5 * lr0 * (1 + cos(pi * n / E))``, blended during
the first 10 epochs with 0.01 (weights ``(n - 1) / 10`` and
``(11 - n) / 10``); the ImageNet scripts set ``0.5 * lr0 * (1 + cos(pi *
e / E))`` at the start of epoch e = 0 .. E - 1.
"""
import copy
import glob
import math
import os.path as osp

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.optim import OptimWrapper, build_optim_wrapper
from torch.utils.data import Dataset

from auglocal_det.engine.runner import LocalRunner
from auglocal_det.engine.schedulers import EpochCosineLR
from auglocal_det.errors import InputError
from auglocal_det.registry import MODELS, PARAM_SCHEDULERS
from auglocal_det.structures import ClsDataSample

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SCHEDULES = osp.join(ROOT, 'configs', '_base_', 'schedules')


def official_small_image_lr(epoch, lr0, epochs):
    """The rate of epoch number ``epoch`` (from 1) of the small-image
    scripts."""
    cosine = 0.5 * lr0 * (1 + math.cos(math.pi * epoch / epochs))
    if epoch > 10:
        return cosine
    return cosine * (epoch - 1) / 10 + 0.01 * (11 - epoch) / 10


def official_imagenet_lr(epoch, lr0, epochs):
    """The rate of epoch ``epoch`` (from 0) of the ImageNet scripts."""
    return 0.5 * lr0 * (1 + math.cos(math.pi * epoch / epochs))


def _cfg(path):
    return Config.fromfile(osp.join(ROOT, 'configs', path))


def build_schedulers(scheduler_cfgs, optim_wrapper, epoch_length):
    """Build the configured schedulers as the Runner does."""
    return [
        PARAM_SCHEDULERS.build(
            dict(cfg),
            default_args=dict(
                optimizer=optim_wrapper, epoch_length=epoch_length))
        for cfg in scheduler_cfgs
    ]


def step_after_iter(schedulers):
    """ParamSchedulerHook.after_train_iter."""
    for scheduler in schedulers:
        if not scheduler.by_epoch:
            scheduler.step()


def step_after_epoch(schedulers):
    """ParamSchedulerHook.after_train_epoch."""
    for scheduler in schedulers:
        if scheduler.by_epoch:
            scheduler.step()


def lrs_per_iteration(scheduler_cfgs, optim_wrapper, num_epochs,
                      epoch_length):
    """The rate of every iteration of ``num_epochs`` epochs, the schedulers
    stepped as the Runner steps them (no training)."""
    schedulers = build_schedulers(scheduler_cfgs, optim_wrapper,
                                  epoch_length)
    lrs = []
    for _ in range(num_epochs):
        for _ in range(epoch_length):
            lrs.append(optim_wrapper.param_groups[0]['lr'])
            optim_wrapper.step()  # no gradients: no change
            step_after_iter(schedulers)
        step_after_epoch(schedulers)
    return lrs


def _toy_wrapper(optim_cfg):
    return build_optim_wrapper(nn.Linear(2, 2), copy.deepcopy(optim_cfg))


# ------------------------------------------------------------------ unit
def test_build_from_config_and_refusals():
    wrapper = OptimWrapper(
        torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.8))
    scheduler, = build_schedulers([
        dict(type='EpochCosineLR', T_max=400, first_epoch=1,
             warmup_epochs=10, start_factor=0.01 / 0.8, begin=0, end=400)
    ], wrapper, epoch_length=49)
    assert isinstance(scheduler, EpochCosineLR) and scheduler.by_epoch
    assert wrapper.param_groups[0]['lr'] == 0.01  # epoch 1 of the warm-up
    with pytest.raises(InputError, match='once per epoch'):
        build_schedulers([
            dict(type='EpochCosineLR', T_max=200, convert_to_iter_based=True)
        ], wrapper, epoch_length=49)
    with pytest.raises(InputError, match='by_epoch=True'):
        EpochCosineLR(wrapper, T_max=200, by_epoch=False)
    with pytest.raises(InputError, match='first_epoch=1'):
        EpochCosineLR(wrapper, T_max=200, warmup_epochs=10)
    with pytest.raises(InputError, match='T_max'):
        EpochCosineLR(wrapper, T_max=0)


# ------------------------------------------------------- per-epoch values
@pytest.mark.parametrize('schedule,lr0', [('cifar_bs1024_sgd_cos_400e', 0.8),
                                          ('stl10_bs128_sgd_cos_400e', 0.1)])
def test_small_image_schedule_every_epoch(schedule, lr0):
    """All 400 epochs, two iterations each: the official rate, constant
    through each epoch, to the last bit (0.72 in epoch 10, 0 in 400)."""
    cfg = Config.fromfile(osp.join(SCHEDULES, schedule + '.py'))
    wrapper = _toy_wrapper(cfg.optim_wrapper)
    lrs = lrs_per_iteration(cfg.param_scheduler, wrapper, 400, 2)
    expected = [
        official_small_image_lr(n, lr0, 400) for n in range(1, 401)
        for _ in range(2)
    ]
    assert lrs == expected
    assert lrs[0] == 0.01 and lrs[-1] == 0.0
    if lr0 == 0.8:
        assert lrs[19] == pytest.approx(0.72, abs=2e-4)


@pytest.mark.parametrize('ratio', [1.0, 0.25])
def test_imagenet_schedule_every_epoch_and_auto_scale_lr(ratio):
    """All 200 epochs; ``--auto-scale-lr`` (the Runner multiplies the
    optimizer's lr before it builds the schedulers) scales the curve."""
    cfg = Config.fromfile(
        osp.join(SCHEDULES, 'imagenet_bs1024_sgd_cos_200e.py'))
    wrapper = _toy_wrapper(cfg.optim_wrapper)
    for group in wrapper.optimizer.param_groups:  # Runner.scale_lr
        group['lr'] = group['lr'] * ratio
    lr0 = 0.4 * ratio
    lrs = lrs_per_iteration(cfg.param_scheduler, wrapper, 200, 3)
    assert lrs == [
        official_imagenet_lr(e, lr0, 200) for e in range(200)
        for _ in range(3)
    ]
    assert lrs[0] == lr0


def test_auto_scale_lr_scales_the_warm_up():
    cfg = Config.fromfile(osp.join(SCHEDULES, 'cifar_bs1024_sgd_cos_400e.py'))
    wrapper = _toy_wrapper(cfg.optim_wrapper)
    for group in wrapper.optimizer.param_groups:
        group['lr'] = group['lr'] * 0.25
    lrs = lrs_per_iteration(cfg.param_scheduler, wrapper, 400, 1)
    expected = [
        0.25 * official_small_image_lr(n, 0.8, 400) for n in range(1, 401)
    ]
    assert lrs == pytest.approx(expected, rel=1e-12, abs=1e-18)


def test_smooth_schedules_keep_the_per_iteration_rate():
    """The *_smooth.py bases: the rate changes inside the epoch."""
    cfg = Config.fromfile(
        osp.join(SCHEDULES, 'cifar_bs1024_sgd_cos_400e_smooth.py'))
    wrapper = _toy_wrapper(cfg.optim_wrapper)
    lrs = lrs_per_iteration(cfg.param_scheduler, wrapper, 1, 49)
    # LinearLR over the 490 iterations of 10 epochs: 8.75 times the
    # official rate in the last iteration of epoch 1
    assert lrs[0] == pytest.approx(0.01)
    assert lrs[-1] == pytest.approx(0.01 + 0.79 * 48 / 489)
    assert lrs[-1] / 0.01 == pytest.approx(8.75, abs=0.01)
    imagenet = Config.fromfile(
        osp.join(SCHEDULES, 'imagenet_bs1024_sgd_cos_200e_smooth.py'))
    wrapper = _toy_wrapper(imagenet.optim_wrapper)
    lrs = lrs_per_iteration(imagenet.param_scheduler, wrapper, 1, 10)
    assert lrs[0] == 0.4 and lrs[1] < lrs[0]


# ------------------------------------------------------------ trajectory
class _Float64Inputs(nn.Module):
    """A data preprocessor handing out float64 inputs."""

    def __init__(self, preprocessor):
        super().__init__()
        self.preprocessor = preprocessor

    def forward(self, data, training=False):
        data = self.preprocessor(data, training)
        data['inputs'] = data['inputs'].double()
        return data


def _batch(step, num=4):
    gen = torch.Generator().manual_seed(1000 + step)
    inputs = [
        torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8, generator=gen)
        for _ in range(num)
    ]
    labels = torch.randint(0, 10, (num, ), generator=gen)
    return dict(
        inputs=inputs,
        data_samples=[ClsDataSample().set_gt_label(int(y)) for y in labels])


def _float64_model(cfg):
    model_cfg = dict(cfg.model)
    model_cfg['data_preprocessor'] = cfg.data_preprocessor
    torch.manual_seed(0)
    model = MODELS.build(model_cfg)
    model.init_weights()
    model = model.double().train()
    model.data_preprocessor = _Float64Inputs(model.data_preprocessor)
    return model


@pytest.mark.parametrize(
    'epochs,epoch_length',
    [
        (400, 2),  # the paper's 400 epochs: ten warm-up epochs of 2 steps
        (20, 1),  # --epochs 20: warm-up, cosine and the last epoch at 0
    ])
def test_r32_auglocal_trajectory_equals_official_loop(epochs, epoch_length):
    """20 steps of the CIFAR ResNet-32 AugLocal config in float64 through
    its optimizer wrapper and schedulers, stepped as the Runner steps them,
    against the official loop: the rate set at each epoch's start, plain
    Nesterov SGD, one update per iteration. Same rates and same weights,
    bit for bit."""
    cfg = _cfg('auglocal/auglocal-d2_r32_400e_cifar10.py')
    cfg.param_scheduler[0].T_max = epochs
    cfg.param_scheduler[0].end = epochs
    num_epochs = 20 // epoch_length
    model = _float64_model(cfg)
    reference = copy.deepcopy(model)

    wrapper = build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper))
    schedulers = build_schedulers(cfg.param_scheduler, wrapper, epoch_length)
    lrs = []
    step = 0
    for _ in range(num_epochs):
        for _ in range(epoch_length):
            lrs.append(wrapper.param_groups[0]['lr'])
            model.train_step(_batch(step), wrapper)
            step_after_iter(schedulers)
            step += 1
        step_after_epoch(schedulers)

    optimizer = torch.optim.SGD(
        reference.parameters(),
        lr=0.8,
        momentum=0.9,
        nesterov=True,
        weight_decay=1e-4)
    expected_lrs = []
    step = 0
    for epoch in range(num_epochs):
        for group in optimizer.param_groups:
            group['lr'] = official_small_image_lr(epoch + 1, 0.8, epochs)
        for _ in range(epoch_length):
            expected_lrs.append(optimizer.param_groups[0]['lr'])
            optimizer.zero_grad()
            data = reference.data_preprocessor(_batch(step), True)
            losses = reference.loss(data['inputs'], data['data_samples'])
            sum(value for name, value in losses.items()
                if name.startswith('loss_')).backward()
            optimizer.step()
            step += 1

    assert len(lrs) == 20 and lrs == expected_lrs
    if epochs == 20:
        assert lrs[-1] == 0.0
    state, ref_state = model.state_dict(), reference.state_dict()
    assert list(state) == list(ref_state)
    for name, value in state.items():
        assert torch.equal(value, ref_state[name]), name


# ---------------------------------------------------- resume in an epoch
class _ToyModel(BaseModel):

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, inputs, labels, mode='tensor'):
        logits = self.fc(inputs)
        if mode == 'loss':
            return dict(loss=F.cross_entropy(logits, labels))
        return logits


class _ToyData(Dataset):

    def __init__(self):
        gen = torch.Generator().manual_seed(0)
        self.inputs = torch.randn(12, 4, generator=gen)
        self.labels = torch.randint(0, 3, (12, ), generator=gen)

    def __len__(self):
        return 12

    def __getitem__(self, index):
        return dict(inputs=self.inputs[index], labels=self.labels[index])


class _RecordLr(Hook):

    def __init__(self):
        self.lrs = {}

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.lrs[runner.iter + 1] = runner.optim_wrapper.param_groups[0]['lr']


def _toy_runner(work_dir, name, **kwargs):
    cfg = Config.fromfile(osp.join(SCHEDULES, 'cifar_bs1024_sgd_cos_400e.py'))
    scheduler = dict(cfg.param_scheduler[0], T_max=3, end=3)
    recorder = _RecordLr()
    torch.manual_seed(0)
    runner = LocalRunner(
        model=_ToyModel(),
        work_dir=str(work_dir),
        experiment_name=name,
        train_dataloader=dict(
            dataset=_ToyData(),
            sampler=dict(type='DefaultSampler', shuffle=True),
            collate_fn=dict(type='default_collate'),
            batch_size=3,
            num_workers=0),
        optim_wrapper=dict(
            type='OptimWrapper', optimizer=dict(cfg.optim_wrapper.optimizer)),
        param_scheduler=[scheduler],
        train_cfg=dict(type='ResumableEpochBasedTrainLoop', max_epochs=3),
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=2,
                            by_epoch=False),
            logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=[recorder],
        visualizer=dict(type='Visualizer', name=name),
        randomness=dict(seed=0),
        default_scope='mmengine',
        **kwargs)
    return runner, recorder


def test_resume_in_the_middle_of_an_epoch(tmp_path):
    """A run resumed after batch 2 of epoch 2 (of 4 batches) trains the
    rest of that epoch at its official rate and the next epoch at the next
    one, with the weights of the uninterrupted run."""
    whole, whole_lrs = _toy_runner(tmp_path / 'whole', 'epoch_cos_whole')
    whole.train()
    expected = {
        i: official_small_image_lr((i - 1) // 4 + 1, 0.8, 3)
        for i in range(1, 13)
    }
    assert whole_lrs.lrs == expected

    resumed, resumed_lrs = _toy_runner(
        tmp_path / 'resumed',
        'epoch_cos_resumed',
        resume=True,
        load_from=str(tmp_path / 'whole' / 'iter_6.pth'))
    resumed.train()
    assert resumed_lrs.lrs == {i: expected[i] for i in range(7, 13)}
    for (name, value), ref in zip(resumed.model.state_dict().items(),
                                  whole.model.state_dict().values()):
        assert torch.equal(value, ref), name


# ------------------------------------------------------- paper configs
PAPER_CONFIGS = sorted(
    osp.relpath(p, osp.join(ROOT, 'configs'))
    for pattern in ('*/*_400e_*.py', '*/*_200e_imagenet.py', '*_imagenet.py',
                    '*_imagenet_pipe.py')
    for p in glob.glob(osp.join(ROOT, 'configs', pattern)))


def test_paper_configs_use_the_official_schedule():
    """Every paper config trains with EpochCosineLR, starting at the
    official rate of its first epoch."""
    assert len(PAPER_CONFIGS) > 90
    for config in PAPER_CONFIGS:
        cfg = _cfg(config)
        assert [s.type for s in cfg.param_scheduler] == ['EpochCosineLR'], (
            config)
        lr0 = cfg.optim_wrapper.optimizer.lr
        wrapper = _toy_wrapper(cfg.optim_wrapper)
        build_schedulers(cfg.param_scheduler, wrapper, epoch_length=1)
        first = 0.01 if cfg.train_cfg.max_epochs == 400 else lr0
        assert wrapper.param_groups[0]['lr'] == first, config
