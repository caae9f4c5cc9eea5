"""A non-finite local loss stops training (or, with AMP, skips the update).
"""
import copy
import warnings
from unittest import mock

import pytest
import torch
import torch.nn as nn

from auglocal_det.engine.optim_wrappers import (
    AmpLocalOptimWrapper,
    LayerwiseLocalOptimWrapper,
    LocalOptimWrapper,
)
from auglocal_det.registry import MODELS
from auglocal_det.structures import ClsDataSample


def _layers() -> nn.ModuleList:
    torch.manual_seed(0)
    return nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 2)])


def _iteration(wrapper, model, poison=None, names=('first', 'second')):
    """One local iteration; the loss of layer ``poison`` is NaN."""
    x = torch.randn(3, 4)
    with wrapper.optim_context(model):
        for index, layer in enumerate(model):
            x = layer(x.detach())
            loss = x.pow(2).mean()
            if index == poison:
                loss = loss * float('nan')
            wrapper.backward(loss, name=names[index])
    return wrapper.finish_iteration()


@pytest.mark.parametrize('wrapper_type',
                         [LocalOptimWrapper, LayerwiseLocalOptimWrapper])
def test_nan_loss_stops_with_layer_and_iteration(wrapper_type):
    model = _layers()
    wrapper = wrapper_type(torch.optim.SGD(model.parameters(), lr=0.1))
    wrapper.initialize_count_status(model, 41, 100)  # resumed at iter 41
    _iteration(wrapper, model)  # iteration 42 is fine
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(FloatingPointError) as info:
        _iteration(wrapper, model, poison=1)
    message = str(info.value)
    assert message.startswith('non-finite loss (NaN or Inf) in second at '
                              'iteration 43')
    assert 'optim_wrapper.optimizer.lr' in message
    if wrapper_type is LocalOptimWrapper:  # stopped before the step
        for key, value in model.state_dict().items():
            assert torch.equal(value, before[key]), key


def test_check_can_be_disabled():
    model = _layers()
    wrapper = LocalOptimWrapper(
        torch.optim.SGD(model.parameters(), lr=0.1), check_finite=False)
    assert _iteration(wrapper, model, poison=0)


def _amp_wrapper(model: nn.Module, **kwargs) -> AmpLocalOptimWrapper:
    """An AMP wrapper on CPU (bfloat16 autocast, CPU gradient scaler).

    MMEngine's AmpOptimWrapper refuses to build without a GPU, so the check
    is patched and the CUDA scaler replaced by a CPU one.
    """
    target = 'mmengine.optim.optimizer.amp_optimizer_wrapper.' \
        'is_cuda_available'
    with mock.patch(target, return_value=True), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        wrapper = AmpLocalOptimWrapper(
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            dtype='bfloat16',
            **kwargs)
    wrapper.loss_scaler = torch.amp.GradScaler('cpu', init_scale=256.)
    return wrapper


def test_amp_skips_the_update_then_stops_when_it_persists():
    model = _layers()
    wrapper = _amp_wrapper(model, nonfinite_patience=2)
    before = copy.deepcopy(model.state_dict())
    with mock.patch(
            'auglocal_det.engine.optim_wrappers.local_optim_wrapper.'
            'print_log') as log:
        _iteration(wrapper, model, poison=0)
        _iteration(wrapper, model, poison=0)
    for key, value in model.state_dict().items():  # both updates skipped
        assert torch.equal(value, before[key]), key
    assert wrapper.loss_scaler.get_scale() == 64.  # backed off twice
    message = log.call_args_list[0].args[0]
    assert 'non-finite loss (NaN or Inf) in first at iteration 1' in message
    assert 'the AMP loss scaler skips this update' in message

    _iteration(wrapper, model)  # a finite iteration resets the count
    _iteration(wrapper, model, poison=0)
    _iteration(wrapper, model, poison=0)
    with pytest.raises(FloatingPointError, match='training diverged'):
        _iteration(wrapper, model, poison=0)


def test_classifier_names_the_local_module():
    """The classifier passes each module's name: layer names and loss."""
    model = MODELS.build(
        dict(
            type='LocalImageClassifier',
            backbone=dict(type='LocalCifarResNet', depth=20,
                          base_channels=4),
            aux_head=dict(type='AugLocalAuxHead', depth=2),
            num_classes=3,
            image_size=16,
            split_points=[0, 3, 6]))
    wrapper = LocalOptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    data = dict(
        inputs=[torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8)] * 2,
        data_samples=[ClsDataSample().set_gt_label(i) for i in (0, 1)])
    head = model.aux_heads[1]
    real_loss = head.loss

    def nan_loss(feat, batch):
        losses, logits = real_loss(feat, batch)
        return {k: v * float('nan') for k, v in losses.items()}, logits

    with mock.patch.object(head, 'loss', nan_loss), \
            pytest.raises(FloatingPointError) as info:
        model.train_step(data, wrapper)
    message = str(info.value)
    print(message)  # quoted in docs/reliability.md
    assert message.startswith(
        'non-finite loss (NaN or Inf) in local module 1 (layer1.0 .. '
        'layer1.2, loss_l01) at iteration 1')
