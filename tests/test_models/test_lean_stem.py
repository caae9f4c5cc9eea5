"""Tests of the memory-lean stem: the plain stem's results, in chunks."""
import copy

import pytest
import torch
import torch.nn as nn
from common_utils import assert_same_state, make_batch, sgd

import auglocal_det  # noqa: F401  (registers the components)
from auglocal_det.engine.optim_wrappers import (
    LayerwiseLocalOptimWrapper,
    LocalOptimWrapper,
)
from auglocal_det.models.layers import LeanStem
from auglocal_det.registry import MODELS

TOL = dict(rtol=1e-5, atol=1e-5)
#: Image size of the classifier tests.
IMAGE = 32


def assert_close_fp32(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal up to float32 round-off of sums over a batch (relative to
    the tensor's largest magnitude: BatchNorm's backward subtracts nearly
    equal terms)."""
    scale = expected.abs().max().item()
    torch.testing.assert_close(actual, expected, rtol=1e-5,
                               atol=1e-5 * max(scale, 1.))


def assert_state_equal(model: nn.Module, ref: nn.Module) -> None:
    """Same state-dict keys and values, up to float64 round-off."""
    state, ref_state = model.state_dict(), ref.state_dict()
    assert list(state) == list(ref_state)
    for name, value in state.items():
        torch.testing.assert_close(
            value, ref_state[name], rtol=1e-10, atol=1e-12,
            msg=lambda m, n=name: f'{n}: {m}')


class Float64Inputs(nn.Module):
    """The model's data preprocessor, handing out float64 inputs."""

    def __init__(self, preprocessor: nn.Module) -> None:
        super().__init__()
        self.preprocessor = preprocessor

    def forward(self, data: dict, training: bool = False) -> dict:
        data = self.preprocessor(data, training)
        data['inputs'] = data['inputs'].double()
        return data


def _stem(pool: bool, momentum=0.1) -> nn.Sequential:
    torch.manual_seed(0)
    layers = [
        nn.Conv2d(3, 6, 7, stride=2, padding=3, bias=False),
        nn.BatchNorm2d(6, momentum=momentum),
        nn.ReLU(inplace=True)
    ]
    if pool:
        layers.append(nn.MaxPool2d(3, stride=2, padding=1))
    stem = nn.Sequential(*layers)
    with torch.no_grad():  # non-trivial affine parameters and statistics
        stem[1].weight.uniform_(0.5, 1.5)
        stem[1].bias.uniform_(-0.5, 0.5)
        stem[1].running_mean.uniform_(-0.2, 0.2)
        stem[1].running_var.uniform_(0.5, 1.5)
    return stem


def _lean(plain: nn.Sequential, chunk_size: int) -> LeanStem:
    lean = copy.deepcopy(plain)
    return LeanStem(*lean, chunk_size=chunk_size)


def _run(stem: nn.Module, x: torch.Tensor, grad: torch.Tensor):
    x = x.clone().requires_grad_()
    out = stem(x)
    out.backward(grad)
    grads = [x.grad] + [p.grad for p in stem.parameters()]
    return out.detach(), grads


@pytest.mark.parametrize('pool', [True, False])
@pytest.mark.parametrize('momentum', [0.1, None])
@pytest.mark.parametrize('chunk_size', [1, 3, 16])
def test_same_outputs_grads_and_statistics(pool, momentum, chunk_size):
    """Training mode (batch statistics, two iterations so that the
    running statistics are updated twice) and eval mode (running
    statistics): outputs, input and parameter gradients and buffers equal
    the plain stem's. Chunks of 3 do not divide the batch of 7."""
    plain = _stem(pool, momentum)
    lean = _lean(plain, chunk_size)
    gen = torch.Generator().manual_seed(1)
    for mode in ('train', 'train', 'eval'):
        plain.train(mode == 'train')
        lean.train(mode == 'train')
        x = torch.randn(7, 3, 20, 20, generator=gen)
        with torch.no_grad():
            shape = copy.deepcopy(plain)(x).shape
        grad = torch.randn(shape, generator=gen)
        for module in (plain, lean):
            module.zero_grad()
        out_ref, grads_ref = _run(plain, x, grad)
        out, grads = _run(lean, x, grad)
        torch.testing.assert_close(out, out_ref, **TOL)
        for g, g_ref in zip(grads, grads_ref):
            assert_close_fp32(g, g_ref)
        for (name, buf), buf_ref in zip(lean.named_buffers(),
                                        plain.buffers()):
            torch.testing.assert_close(
                buf, buf_ref, **TOL, msg=lambda m, n=name: f'{n}: {m}')
    assert lean.bn1.num_batches_tracked.item() == 2


def test_frozen_and_no_grad():
    """No gradient anywhere: the forward alone, chunked; frozen BatchNorm
    parameters get no gradient but the convolution still does."""
    plain = _stem(True)
    lean = _lean(plain, 2)
    x = torch.randn(5, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(lean(x), plain(x), **TOL)
    lean.bn1.weight.requires_grad_(False)
    lean.bn1.bias.requires_grad_(False)
    lean(x).sum().backward()
    assert lean.bn1.weight.grad is None and lean.conv1.weight.grad is not None


def test_checks_its_modules():
    plain = _stem(True)
    with pytest.raises(ValueError, match='chunk_size'):
        LeanStem(*plain, chunk_size=0)
    with pytest.raises(ValueError, match='BatchNorm2d'):
        LeanStem(plain[0], nn.GroupNorm(2, 6), plain[2], plain[3])
    with pytest.raises(ValueError, match='stem_chunk_size'):
        MODELS.build(dict(type='LocalResNet', depth=18, stem_chunk_size=0))


def _classifier_cfg(stem_chunk_size=None, with_cp=False, aux_cp=False,
                    cp_stages=None, cp_max_downsample=None, offload=None):
    return dict(
        type='LocalImageClassifier',
        backbone=dict(
            type='LocalResNet',
            depth=18,
            base_channels=8,
            stem_chunk_size=stem_chunk_size,
            with_cp=with_cp,
            cp_stages=cp_stages),
        aux_head=dict(type='AugLocalAuxHead', depth=2, with_cp=aux_cp,
                      cp_max_downsample=cp_max_downsample),
        num_classes=5,
        image_size=IMAGE,
        rule='local',
        aux_head_offload=offload)


def _batch(seed: int) -> dict:
    gen = torch.Generator().manual_seed(seed)
    data = make_batch(seed, num=5)
    data['inputs'] = [
        torch.randint(0, 256, (3, IMAGE, IMAGE), dtype=torch.uint8,
                      generator=gen)
        for _ in data['inputs']
    ]
    return data


def _build(**kwargs):
    """A classifier in float64: the lean stem sums in another order than
    BatchNorm, and in float32 that round-off grows through the later
    modules' BatchNorms (to 2e-5 here); in float64 any real difference
    stands out."""
    torch.manual_seed(0)
    model = MODELS.build(_classifier_cfg(**kwargs)).train().double()
    model.data_preprocessor = Float64Inputs(model.data_preprocessor)
    return model


def test_backbone_keys_and_forward_unchanged():
    plain = MODELS.build(dict(type='LocalResNet', depth=18, base_channels=8))
    lean = MODELS.build(
        dict(type='LocalResNet', depth=18, base_channels=8,
             stem_chunk_size=2))
    lean.load_state_dict(plain.state_dict())
    assert list(lean.state_dict()) == list(plain.state_dict())
    assert isinstance(lean.local_layers()[0], LeanStem)
    assert [n for n, _ in lean.local_layers()[0].named_parameters()] == [
        n for n, _ in plain.local_layers()[0].named_parameters()]
    x = torch.randn(3, 3, 32, 32)
    for mode in (True, False):
        plain.train(mode)
        lean.train(mode)
        for out, ref in zip(lean(x), plain(x)):
            torch.testing.assert_close(out, ref, **TOL)
    assert_same_state(lean, plain, check_keys=True)


def test_train_step_equals_plain_stem():
    """Two AugLocal train_steps with the lean stem give the weights, BN
    statistics and logged losses of the plain stem's."""
    plain = _build()
    lean = _build(stem_chunk_size=2)
    plain_wrapper = LocalOptimWrapper(sgd(plain))
    lean_wrapper = LocalOptimWrapper(sgd(lean))
    for it in range(2):
        log_ref = plain.train_step(_batch(it), plain_wrapper)
        log = lean.train_step(_batch(it), lean_wrapper)
        for key, value in log_ref.items():
            torch.testing.assert_close(
                log[key], value, rtol=1e-10, atol=1e-12)
    assert_state_equal(lean, plain)


@pytest.mark.parametrize('options', [
    dict(with_cp='nested', aux_cp=1),
    # the ImageNet recipe's selection: layer1's blocks, the heads at 4x
    dict(with_cp=True, cp_stages=(0, ), aux_cp=1, cp_max_downsample=4),
    # and with the heads resting in files between uses (the CPU recipe)
    dict(with_cp=True, cp_stages=(0, ), aux_cp=1, cp_max_downsample=4,
         offload=dict(host='file')),
    dict(with_cp='nested', aux_cp=1, offload=dict(host='file')),
])
def test_every_memory_option_equals_summed_loss_reference(options):
    """Lean stem, nested checkpointing in the backbone blocks, plain
    checkpointing in the first auxiliary blocks, the heads in files and
    the per-layer step:
    one update equals the reference definition (summed local losses, one
    backward, one SGD step) of the plain network, BatchNorm statistics
    included (a checkpointed block's recomputation must not update them
    again)."""
    ref = _build()
    model = _build(stem_chunk_size=2, **options)
    model.load_state_dict(ref.state_dict())
    wrapper = LayerwiseLocalOptimWrapper(sgd(model))
    ref_opt = sgd(ref)
    data = _batch(3)
    model.train_step(data, wrapper)
    inputs = ref.data_preprocessor(data, True)
    loss, _ = ref.parse_losses(ref(**inputs, mode='loss'))
    loss.backward()
    ref_opt.step()
    assert all(p.grad is None for p in model.parameters())
    offload = model.aux_head_offload
    if offload is not None:  # the heads went to their files and back
        assert offload.in_files and offload.resident == set()
        assert len(offload.host_tensors()) >= len(
            list(model.aux_heads.parameters()))
    assert_state_equal(model, ref)


def test_aux_head_checkpoints_its_first_blocks():
    model = _build(aux_cp=1)
    for head in model.aux_heads:
        assert [b.with_cp for b in head.blocks] == [True] + [False] * (
            len(head.blocks) - 1)
    model = _build(aux_cp=True)
    assert all(b.with_cp for h in model.aux_heads for b in h.blocks)
    with pytest.raises(ValueError, match='model.aux_head.with_cp'):
        _build(aux_cp=-1)
    # only the heads at the highest resolution (stem and layer1: 4x)
    cfg = _classifier_cfg(aux_cp=1)
    cfg['aux_head']['cp_max_downsample'] = 4
    model = MODELS.build(cfg)
    specs = model.backbone.local_layer_specs()
    for head in model.aux_heads:
        high = specs[head.layer_index].downsample <= 4
        assert head.blocks[0].with_cp == high
        assert not any(b.with_cp for b in head.blocks[1:])
    assert {h.blocks[0].with_cp for h in model.aux_heads} == {True, False}
    cfg['aux_head']['cp_max_downsample'] = 0
    with pytest.raises(ValueError, match='model.aux_head.cp_max_downsample'):
        MODELS.build(cfg)
    with pytest.raises(ValueError, match="'nested'"):
        _build(with_cp='twice')
