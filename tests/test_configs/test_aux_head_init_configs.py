"""The initial weights of the paper configs' auxiliary heads follow the
official code of each backbone.

The official VGG code builds its auxiliary networks after its
initialisation loop, so they keep PyTorch's defaults: Kaiming-uniform
weights with a = sqrt(5), i.e. U(-b, b) with b = 1 / sqrt(fan_in), and
biases from the same U(-b, b). The official CIFAR ResNet code builds them
before its loop, which draws every convolution from N(0, 2 / (k^2 C_out)).
"""
import math
import os.path as osp

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config

from auglocal_det.registry import MODELS

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _first_head(config):
    """The config's first auxiliary head, initialised as the Runner
    initialises the model (``init_weights``)."""
    cfg = Config.fromfile(osp.join(ROOT, 'configs', config))
    torch.manual_seed(0)
    specs = MODELS.build(cfg.model.backbone).local_layer_specs()
    split_points = cfg.model.get('split_points') or range(len(specs))
    head = MODELS.build(
        dict(
            cfg.model.aux_head,
            layer_index=0,
            layer_specs=specs,
            module_index=0,
            num_aux=len(split_points) - 1,
            num_classes=cfg.model.num_classes,
            image_size=cfg.model.image_size))
    head.init_weights()
    return head


def _weighted_layers(head):
    layers = [m for m in head.modules() if isinstance(m, (nn.Conv2d,
                                                          nn.Linear))]
    assert layers
    return layers


VGG_CONFIGS = (
    'auglocal/auglocal-d4_vgg13_200e_imagenet.py',
    'dgl/dgl_vgg13_200e_imagenet.py',
    'auglocal/auglocal-d4_vgg19_400e_cifar10.py',
)


def test_heads_start_as_the_official_code_leaves_them():
    # VGG: PyTorch's defaults, bounded by 1 / sqrt(fan_in), biases drawn
    for config in VGG_CONFIGS:
        for layer in _weighted_layers(_first_head(config)):
            weight = layer.weight.detach()
            bound = 1 / math.sqrt(weight[0].numel())
            assert weight.abs().max() <= bound, (config, layer)
            if weight.numel() >= 100_000:
                assert weight.std().item() == pytest.approx(
                    bound / math.sqrt(3), rel=0.02), (config, layer)
            if layer.bias is not None:
                bias = layer.bias.detach()
                assert bias.abs().max() <= bound, (config, layer)
                assert (bias != 0).all(), (config, layer)

    # ResNet-32 (official CIFAR code): N(0, 2 / (k^2 C_out)), unbounded
    head = _first_head('auglocal/auglocal-d4_r32_400e_cifar10.py')
    convs = [
        m for m in _weighted_layers(head)
        if isinstance(m, nn.Conv2d) and m.weight.numel() >= 2000
    ]
    assert convs
    for conv in convs:
        weight = conv.weight.detach()
        fan_out = weight[0, 0].numel() * weight.shape[0]
        assert weight.std().item() == pytest.approx(
            math.sqrt(2 / fan_out), rel=0.1), conv
    assert any(m.weight.abs().max() > 1 / math.sqrt(m.weight[0].numel())
               for m in convs)


@pytest.mark.parametrize('config,last_norm_weight', [
    ('auglocal_r34_imagenet.py', 1.),  # official AugLocal ImageNet ResNet
    ('bp_r34_imagenet.py', 1.),
    ('auglocal_r101_imagenet.py', 1.),
    ('mlaan_r34_imagenet.py', 0.),  # MLAAN's ImageNet code zero-inits
])
def test_imagenet_resnet_residual_init(config, last_norm_weight):
    """The last BatchNorm of every block starts as the official code of the
    config's rule leaves it."""
    cfg = Config.fromfile(osp.join(ROOT, 'configs', config))
    backbone = MODELS.build(cfg.model.backbone)
    backbone.init_weights()
    last_norms = [
        getattr(block, block.last_norm_name)
        for layer in (backbone.layer1, backbone.layer2, backbone.layer3,
                      backbone.layer4) for block in layer
    ]
    assert last_norms
    for norm in last_norms:
        assert torch.all(norm.weight == last_norm_weight)
