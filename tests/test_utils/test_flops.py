"""FLOPs of the local-learning settings against reference measurements.

The reference values are forward multiply-accumulates per image (backbone
plus auxiliary networks) measured by building the networks of the official
AugLocal code: CIFAR ResNet-110 on 32x32 images, with the CIFAR script's
K - d auxiliary heads, and ImageNet ResNet-34 on 224x224 images.
"""
import pytest
import torch
import torch.nn as nn

import auglocal_det  # noqa: F401  (registers the components)
from auglocal_det.models.backbones import num_local_layers, resnet_archs
from auglocal_det.registry import MODELS
from auglocal_det.utils.flops import (
    FlopsReport,
    count_flops,
    count_forward_flops,
    count_train_step_flops,
)

#: GMACs per 32x32 image of CIFAR ResNet-110, official AugLocal code.
R110_BP = 0.253
R110_UNIFORM = {2: 0.685, 3: 0.916, 4: 1.138, 5: 1.351, 6: 1.553}
R110_PYRAMID = {2: 0.685, 3: 0.794, 4: 0.978, 5: 1.119, 6: 1.284}
#: ImageNet ResNet-34, AugLocal d = 4: GMACs per 224x224 image.
R34_BACKBONE = 3.664
R34_D4_HEADS = [
    0.771, 0.771, 0.771, 0.771, 0.823, 0.823, 0.823, 0.823, 0.874, 0.874,
    0.874, 0.874, 0.874, 0.643, 0.463, 0.232
]



def _build(rule: str,
           arch: str,
           image_size: int,
           num_classes: int,
           cifar_reproduction: bool = False,
           aux_depth: int = 4,
           **aux_kwargs) -> nn.Module:
    """The paper's classifier: one module per local layer; with
    ``cifar_reproduction`` (AugLocal), the official CIFAR script's split:
    heads on the first K - d - 1 layers, the last d + 1 layers trained end
    to end with the output layer, BatchNorm1d in heads of depth <= 1."""
    cls, depth = resnet_archs()[arch]
    aux_head = dict(
        auglocal=dict(type='AugLocalAuxHead', depth=aux_depth, **aux_kwargs),
        dgl=dict(type='DGLAuxHead'),
        infopro=dict(type='InfoProAuxHead'),
        predsim=dict(type='PredSimAuxHead')).get(rule)
    split_points = None
    if cifar_reproduction:
        num_layers = num_local_layers(arch)
        aux_head.update(bn1d_if_shallow=True)
        split_points = list(range(num_layers - aux_depth - 1)) + [
            num_layers - 1
        ]
    return MODELS.build(
        dict(
            type='LocalImageClassifier',
            backbone=dict(type=cls.__name__, depth=depth),
            aux_head=aux_head,
            num_classes=num_classes,
            image_size=image_size,
            split_points=split_points,
            rule='bp' if rule == 'bp' else 'local'))


def _r110(rule: str, **kwargs) -> FlopsReport:
    model = _build(
        rule,
        'resnet110',
        32,
        10,
        cifar_reproduction=rule == 'auglocal',
        **kwargs)
    return count_forward_flops(model)


def _gmacs(flops: float) -> float:
    return round(flops / 2e9, 3)


def test_count_flops_is_two_per_mac():
    layer = nn.Linear(8, 4, bias=False)
    flops, out = count_flops(layer, torch.randn(3, 8))
    assert out.shape == (3, 4)
    assert flops == 2 * 3 * 8 * 4


def test_resnet110_bp():
    report = _r110('bp')
    assert report.aux == []
    assert _gmacs(report.total) == R110_BP
    assert report.total_macs == report.total / 2


@pytest.mark.parametrize('depth', sorted(R110_UNIFORM))
def test_resnet110_auglocal_uniform(depth):
    report = _r110('auglocal', aux_depth=depth)
    assert len(report.aux) == 55 - depth - 1  # K' = K - d modules
    assert _gmacs(report.network) == R110_BP
    assert _gmacs(report.total) == R110_UNIFORM[depth]


@pytest.mark.parametrize('depth', sorted(R110_PYRAMID))
def test_resnet110_auglocal_pyramid(depth):
    report = _r110('auglocal', aux_depth=depth, pyramid=True, tau=0.5)
    assert _gmacs(report.total) == R110_PYRAMID[depth]


def test_resnet34_auglocal_d4_per_head():
    model = _build('auglocal', 'resnet34', 224, 1000, aux_depth=4)
    report = count_forward_flops(model)
    assert _gmacs(report.network) == R34_BACKBONE
    assert [_gmacs(flops) for flops in report.aux] == R34_D4_HEADS
    assert round(report.aux_macs / 1e9, 2) == 12.08
    # the count does not depend on the batch size, nor leave eval mode on
    assert model.training
    pair = count_forward_flops(model, batch_size=2)
    assert pair.backbone == report.backbone
    assert pair.aux == report.aux


def test_train_step_flops_about_three_times_forward():
    model = _build('auglocal', 'resnet32', 32, 10, aux_depth=2).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    from auglocal_det.engine.optim_wrappers import LocalOptimWrapper
    from auglocal_det.structures import ClsDataSample
    data = dict(
        inputs=[
            torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
            for _ in range(2)
        ],
        data_samples=[ClsDataSample().set_gt_label(i) for i in range(2)])
    step = count_train_step_flops(model, data, LocalOptimWrapper(optimizer))
    forward = count_forward_flops(model).total
    # backward: twice the forward, except the input gradient of each
    # module's first convolution, which is never needed
    assert 2.5 * forward < step < 3 * forward
