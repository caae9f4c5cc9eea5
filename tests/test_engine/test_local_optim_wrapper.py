"""Tests of LocalOptimWrapper and AmpLocalOptimWrapper on toy models."""
import copy
import warnings
from unittest import mock

import pytest
import torch
import torch.nn as nn
from mmengine.optim import OptimWrapper

from auglocal_det.engine.optim_wrappers import (
    AmpLocalOptimWrapper,
    LocalOptimWrapper,
)
from auglocal_det.registry import OPTIM_WRAPPERS


def _toy(seed: int = 0) -> nn.ModuleList:
    torch.manual_seed(seed)
    return nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2)])


def _local_losses(model: nn.ModuleList, x: torch.Tensor) -> list:
    """One loss per layer, each on the detached output of the previous."""
    losses = []
    for layer in model:
        x = layer(x.detach())
        losses.append(x.pow(2).mean())
    return losses


def _sgd(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        model.parameters(), lr=0.1, momentum=0.9, nesterov=True,
        weight_decay=1e-2)


def _assert_same_params(a: nn.Module, b: nn.Module) -> None:
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7, msg=name)


def test_build_from_registry():
    model = _toy()
    wrapper = OPTIM_WRAPPERS.build(
        dict(type='LocalOptimWrapper', accumulative_counts=2),
        default_args=dict(optimizer=_sgd(model)))
    assert isinstance(wrapper, LocalOptimWrapper)
    assert isinstance(wrapper, OptimWrapper)


@pytest.mark.parametrize('accumulative_counts', [1, 2])
def test_k_backward_one_step(accumulative_counts):
    """K backward calls, one counted iteration, one step when due, and the
    same weights as one backward of the summed losses."""
    model, ref = _toy(), _toy()
    wrapper = LocalOptimWrapper(
        _sgd(model), accumulative_counts=accumulative_counts)
    ref_opt = _sgd(ref)
    steps = mock.patch.object(
        wrapper.optimizer, 'step', wraps=wrapper.optimizer.step)
    zeros = mock.patch.object(
        wrapper.optimizer, 'zero_grad', wraps=wrapper.optimizer.zero_grad)
    backwards = mock.patch.object(
        wrapper, '_backward_scaled', wraps=wrapper._backward_scaled)
    torch.manual_seed(1)
    batches = [torch.randn(3, 4) for _ in range(2 * accumulative_counts)]
    with steps as step, zeros as zero_grad, backwards as backward:
        for it, x in enumerate(batches):
            for loss in _local_losses(model, x):
                wrapper.backward(loss)
                assert wrapper.inner_count == it
            assert backward.call_count == 3 * (it + 1)
            updated = wrapper.finish_iteration()
            assert wrapper.inner_count == it + 1
            assert backward.call_count == 3 * (it + 1)
            assert updated == ((it + 1) % accumulative_counts == 0)
            # reference: mmengine's own semantics on the summed loss
            total = sum(_local_losses(ref, x)) / accumulative_counts
            total.backward()
            if (it + 1) % accumulative_counts == 0:
                ref_opt.step()
                ref_opt.zero_grad()
        assert step.call_count == len(batches) // accumulative_counts
        assert zero_grad.call_count == step.call_count
    _assert_same_params(model, ref)


def test_update_params_keeps_mmengine_semantics():
    model, ref = _toy(), _toy()
    wrapper = LocalOptimWrapper(_sgd(model), accumulative_counts=2)
    ref_wrapper = OptimWrapper(_sgd(ref), accumulative_counts=2)
    wrapper.initialize_count_status(model, 0, 3)
    ref_wrapper.initialize_count_status(ref, 0, 3)
    torch.manual_seed(2)
    for _ in range(3):  # the last, odd iteration uses the remainder factor
        x = torch.randn(3, 4)
        wrapper.update_params(sum(_local_losses(model, x)))
        ref_wrapper.update_params(sum(_local_losses(ref, x)))
        assert wrapper.inner_count == ref_wrapper.inner_count
    _assert_same_params(model, ref)


def test_clip_grad_once_over_all_params():
    model, ref = _toy(), _toy()
    wrapper = LocalOptimWrapper(
        _sgd(model), clip_grad=dict(max_norm=0.01))
    with mock.patch.object(
            wrapper, 'clip_func', wraps=wrapper.clip_func) as clip:
        x = torch.randn(3, 4)
        for loss in _local_losses(model, x):
            wrapper.backward(loss)
        wrapper.finish_iteration()
    assert clip.call_count == 1
    assert len(clip.call_args.args[0]) == len(list(model.parameters()))
    ref_opt = _sgd(ref)
    sum(_local_losses(ref, x)).backward()
    nn.utils.clip_grad_norm_(ref.parameters(), max_norm=0.01)
    ref_opt.step()
    _assert_same_params(model, ref)


def test_pre_step_hook_runs_before_step():
    model = _toy()
    wrapper = LocalOptimWrapper(_sgd(model), accumulative_counts=2)
    events = []
    wrapper.step = mock.Mock(side_effect=lambda **kw: events.append('step'))
    with wrapper.pre_step_hook(lambda: events.append('hook')):
        for _ in range(2):
            for loss in _local_losses(model, torch.randn(2, 4)):
                wrapper.backward(loss)
            wrapper.finish_iteration()
    wrapper.finish_iteration()  # outside the context: no hook
    assert events == ['hook', 'hook', 'step']


def _amp_wrapper(model: nn.Module, **kwargs) -> AmpLocalOptimWrapper:
    """An AMP wrapper on CPU: bfloat16 autocast and a CPU gradient scaler.

    MMEngine's AmpOptimWrapper refuses to build without a GPU, so the check
    is patched and the (disabled) CUDA scaler replaced by a CPU one.
    """
    target = 'mmengine.optim.optimizer.amp_optimizer_wrapper.' \
        'is_cuda_available'
    with mock.patch(target, return_value=True), warnings.catch_warnings():
        warnings.simplefilter('ignore')  # the CUDA scaler warns on CPU
        wrapper = AmpLocalOptimWrapper(
            optimizer=_sgd(model), dtype='bfloat16', **kwargs)
    wrapper.loss_scaler = torch.amp.GradScaler('cpu', init_scale=256.)
    return wrapper


@pytest.mark.parametrize('accumulative_counts', [1, 2])
def test_amp_one_step_one_update_per_iteration(accumulative_counts):
    model = _toy()
    wrapper = _amp_wrapper(
        model,
        accumulative_counts=accumulative_counts,
        clip_grad=dict(max_norm=1.0))
    scaler = wrapper.loss_scaler
    counters = dict(
        scale=mock.patch.object(scaler, 'scale', wraps=scaler.scale),
        unscale=mock.patch.object(scaler, 'unscale_', wraps=scaler.unscale_),
        sstep=mock.patch.object(scaler, 'step', wraps=scaler.step),
        update=mock.patch.object(scaler, 'update', wraps=scaler.update),
        ostep=mock.patch.object(
            wrapper.optimizer, 'step', wraps=wrapper.optimizer.step),
        zero=mock.patch.object(
            wrapper.optimizer, 'zero_grad',
            wraps=wrapper.optimizer.zero_grad))
    mocks = {name: patcher.start() for name, patcher in counters.items()}
    try:
        before = [p.detach().clone() for p in model.parameters()]
        num_iters = 2 * accumulative_counts
        for it in range(num_iters):
            x = torch.randn(3, 4)
            with wrapper.optim_context(model):
                losses = _local_losses(model, x)
            assert losses[0].dtype == torch.bfloat16  # autocast is on
            for loss in losses:
                wrapper.backward(loss)
            assert wrapper.inner_count == it
            wrapper.finish_iteration()
            assert wrapper.inner_count == it + 1
        updates = num_iters // accumulative_counts
        assert mocks['scale'].call_count == 3 * num_iters
        assert mocks['unscale'].call_count == updates
        assert mocks['sstep'].call_count == updates
        assert mocks['update'].call_count == updates
        assert mocks['ostep'].call_count == updates
        assert mocks['zero'].call_count == updates
    finally:
        for patcher in counters.values():
            patcher.stop()
    for p, q in zip(model.parameters(), before):
        assert torch.isfinite(p).all() and not torch.equal(p, q)


def test_amp_state_dict_round_trip():
    model = _toy()
    wrapper = _amp_wrapper(model)
    for loss in _local_losses(model, torch.randn(3, 4)):
        wrapper.backward(loss)
    wrapper.finish_iteration()
    state = copy.deepcopy(wrapper.state_dict())
    assert 'loss_scaler' in state and 'state' in state
    other = _amp_wrapper(_toy(1))
    other.load_state_dict(state)
    assert other.loss_scaler.get_scale() == wrapper.loss_scaler.get_scale()
    assert other.loss_scaler.state_dict() == wrapper.loss_scaler.state_dict()
