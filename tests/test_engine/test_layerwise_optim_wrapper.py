"""Tests of LayerwiseLocalOptimWrapper: per-module updates, same weights.

A CIFAR ResNet-20 with 8 base channels on 16x16 images (K = 10 local
layers) is trained for two iterations with LocalOptimWrapper (one step at
the end of the iteration) and with LayerwiseLocalOptimWrapper (one update
per local module, right after its backward); the weights must agree.
"""
import copy
import warnings
from typing import List
from unittest import mock

import pytest
import torch
import torch.nn as nn

import auglocal_det  # noqa: F401  (registers the components)
from auglocal_det.engine.optim_wrappers import (
    AmpLayerwiseLocalOptimWrapper,
    AmpLocalOptimWrapper,
    LayerwiseLocalOptimWrapper,
    LocalOptimWrapper,
)
from auglocal_det.registry import MODELS, OPTIM_WRAPPERS
from auglocal_det.structures import ClsDataSample

IMAGE_SIZE = 16
NUM_CLASSES = 5



def _model(aux_head=None, rule='local') -> nn.Module:
    torch.manual_seed(0)
    if rule == 'local' and aux_head is None:
        aux_head = dict(type='AugLocalAuxHead', depth=2)
    model = MODELS.build(
        dict(
            type='LocalImageClassifier',
            backbone=dict(type='LocalCifarResNet', depth=20, base_channels=8),
            aux_head=aux_head,
            num_classes=NUM_CLASSES,
            image_size=IMAGE_SIZE,
            rule=rule))
    return model.train()


def _batch(seed: int, num: int = 4) -> dict:
    gen = torch.Generator().manual_seed(seed)
    inputs = [
        torch.randint(
            0, 256, (3, IMAGE_SIZE, IMAGE_SIZE),
            generator=gen,
            dtype=torch.uint8) for _ in range(num)
    ]
    labels = torch.randint(0, NUM_CLASSES, (num, ), generator=gen)
    samples = [ClsDataSample().set_gt_label(int(y)) for y in labels]
    return dict(inputs=inputs, data_samples=samples)


def _optimizer(model: nn.Module, kind: str) -> torch.optim.Optimizer:
    if kind == 'sgd':
        return torch.optim.SGD(
            model.parameters(),
            lr=0.1,
            momentum=0.9,
            nesterov=True,
            weight_decay=1e-4)
    return torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)


def _assert_same_state(a: nn.Module, b: nn.Module) -> None:
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7, msg=name)


def _train(model, wrapper, iters: int = 2) -> None:
    for it in range(iters):
        model.train_step(_batch(it), wrapper)


def test_build_from_registry():
    model = _model()
    for name in ('LayerwiseLocalOptimWrapper', ):
        wrapper = OPTIM_WRAPPERS.build(
            dict(type=name),
            default_args=dict(optimizer=_optimizer(model, 'sgd')))
        assert isinstance(wrapper, LocalOptimWrapper)


@pytest.mark.parametrize('kind', ['sgd', 'adamw'])
@pytest.mark.parametrize('rule', ['local', 'bp'])
def test_same_weights_as_local_optim_wrapper(kind, rule):
    ref = _model(rule=rule)
    model = copy.deepcopy(ref)
    ref_wrapper = LocalOptimWrapper(_optimizer(ref, kind))
    wrapper = LayerwiseLocalOptimWrapper(_optimizer(model, kind))
    _train(ref, ref_wrapper)
    _train(model, wrapper)
    _assert_same_state(model, ref)
    # the only hook left after the iteration is the update (grads-final)
    assert list(wrapper._grads_final_hooks.values()) == [
        wrapper.update_module
    ]
    assert not wrapper._pre_step_hooks and not wrapper._reducers
    assert all(p.grad is None for p in model.parameters())


def test_one_update_per_module_and_grads_freed():
    model = _model()
    wrapper = LayerwiseLocalOptimWrapper(_optimizer(model, 'sgd'))
    live: List[int] = []
    updates = mock.patch.object(
        wrapper, '_step_subset', wraps=wrapper._step_subset)

    def spy(params):
        # gradients alive when a module's update is due: its own only
        live.append(sum(p.grad is not None for p in model.parameters()))
        mine = sum(1 for _ in params)
        assert live[-1] <= mine

    def reducer(params):
        spy(params)  # runs before the update
        wrapper.grads_final(params)

    with updates as step, wrapper.gradient_reducer(reducer):
        model.train_step(_batch(0), wrapper)
        assert step.call_count == model.num_modules
    assert len(live) == model.num_modules
    assert all(p.grad is None for p in model.parameters())


def test_model_without_callback_is_stepped_at_the_end():
    model = _model()
    ref = copy.deepcopy(model)
    wrapper = LayerwiseLocalOptimWrapper(_optimizer(model, 'sgd'))
    ref_wrapper = LocalOptimWrapper(_optimizer(ref, 'sgd'))
    data = _batch(0)
    updates = mock.patch.object(
        wrapper, '_step_subset', wraps=wrapper._step_subset)
    with updates as step:
        for net, opt in ((model, wrapper), (ref, ref_wrapper)):
            processed = net.data_preprocessor(data, True)
            loss = sum(
                v for k, v in net(**processed, mode='loss').items()
                if k.startswith('loss'))
            opt.update_params(loss)
    assert step.call_count == 1  # no module update, one step at the end
    _assert_same_state(model, ref)


def test_clip_by_value_is_per_module():
    ref = _model()
    model = copy.deepcopy(ref)
    ref_wrapper = LocalOptimWrapper(
        _optimizer(ref, 'sgd'), clip_grad=dict(type='value', clip_value=1e-3))
    wrapper = LayerwiseLocalOptimWrapper(
        _optimizer(model, 'sgd'),
        clip_grad=dict(type='value', clip_value=1e-3))
    _train(ref, ref_wrapper)
    _train(model, wrapper)
    _assert_same_state(model, ref)


def test_refuses_global_norm_and_accumulation():
    model = _model()
    with pytest.raises(ValueError, match='norm'):
        LayerwiseLocalOptimWrapper(
            _optimizer(model, 'sgd'), clip_grad=dict(max_norm=1.0))
    with pytest.raises(ValueError, match='accumulat'):
        LayerwiseLocalOptimWrapper(
            _optimizer(model, 'sgd'), accumulative_counts=2)


def test_refuses_several_processes_without_a_reducer():
    """With several processes the update needs the averaged gradients: a
    backward without a gradient reducer stops before any update."""
    model = _model()
    before = copy.deepcopy(model.state_dict())
    wrapper = LayerwiseLocalOptimWrapper(_optimizer(model, 'sgd'))
    target = ('auglocal_det.engine.optim_wrappers.local_optim_wrapper.'
              'get_world_size')
    with mock.patch(target, return_value=2):
        with pytest.raises(RuntimeError, match='no gradient reducer'):
            model.train_step(_batch(0), wrapper)
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]) or 'running' in name or \
            'num_batches' in name, name


def test_updates_wait_for_the_gradient_reducer():
    """With a reducer registered, a module is updated when the reducer
    reports it final, not when its backward returns."""
    model = _model()
    wrapper = LayerwiseLocalOptimWrapper(_optimizer(model, 'sgd'))
    held: List[list] = []
    steps = mock.patch.object(
        wrapper, '_step_subset', wraps=wrapper._step_subset)

    def reducer(params):
        held.append(params)
        if len(held) == 3:  # report the first two modules late
            for group in held[:2]:
                wrapper.grads_final(group)

    with steps as step, wrapper.gradient_reducer(reducer):
        with pytest.raises(RuntimeError, match='registered already'):
            with wrapper.gradient_reducer(reducer):
                pass
        with wrapper.pre_step_hook(
                lambda: [wrapper.grads_final(g) for g in held[2:]]):
            model.train_step(_batch(0), wrapper)
        assert step.call_count == model.num_modules
    ref = _model()
    _train(ref, LocalOptimWrapper(_optimizer(ref, 'sgd')), iters=1)
    _assert_same_state(model, ref)
    assert not wrapper._reducers


def test_nonfinite_loss_stops_before_updating_that_module():
    model = _model()
    before = copy.deepcopy(model)
    wrapper = LayerwiseLocalOptimWrapper(_optimizer(model, 'sgd'))
    # a NaN in the last module's output makes its loss NaN
    model.backbone.layer3[-1].register_forward_hook(
        lambda module, args, out: out * float('nan'))
    with pytest.raises(FloatingPointError):
        model.train_step(_batch(0), wrapper)
    assert torch.equal(model.head.fc.weight, before.head.fc.weight)
    assert not torch.equal(model.backbone.conv1.weight,
                           before.backbone.conv1.weight)
    assert all(p.grad is None for p in model.parameters())


def _amp(cls, model: nn.Module):
    """An AMP wrapper on CPU (see test_local_optim_wrapper.py)."""
    target = 'mmengine.optim.optimizer.amp_optimizer_wrapper.' \
        'is_cuda_available'
    with mock.patch(target, return_value=True), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        wrapper = cls(optimizer=_optimizer(model, 'sgd'), dtype='bfloat16')
    wrapper.loss_scaler = torch.amp.GradScaler('cpu', init_scale=256.)
    return wrapper


def test_amp_same_weights_and_one_scale_update():
    ref = _model()
    model = copy.deepcopy(ref)
    ref_wrapper = _amp(AmpLocalOptimWrapper, ref)
    wrapper = _amp(AmpLayerwiseLocalOptimWrapper, model)
    update = mock.patch.object(
        wrapper.loss_scaler, 'update', wraps=wrapper.loss_scaler.update)
    _train(ref, ref_wrapper)
    with update as spy:
        _train(model, wrapper)
        assert spy.call_count == 2
    _assert_same_state(model, ref)
    assert wrapper.loss_scaler.get_scale() == ref_wrapper.loss_scaler \
        .get_scale()


def test_amp_overflow_skips_only_that_module():
    model = _model()
    before = copy.deepcopy(model)
    wrapper = _amp(AmpLayerwiseLocalOptimWrapper, model)
    # an infinite gradient in the first local module (the stem)
    model.backbone.conv1.weight.register_hook(
        lambda grad: torch.full_like(grad, float('inf')))
    model.train_step(_batch(0), wrapper)
    assert torch.equal(model.backbone.conv1.weight,
                       before.backbone.conv1.weight)
    assert not torch.equal(model.head.fc.weight, before.head.fc.weight)
    assert wrapper.loss_scaler.get_scale() == 128.  # backed off once
