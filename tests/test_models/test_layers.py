import pytest
import torch
import torch.nn as nn
from torchvision.models import resnet as tv_resnet

from auglocal_det.models.layers import (
    BasicBlock,
    Bottleneck,
    LocalLayerSpec,
    build_norm_layer,
    build_shortcut,
    get_block,
    make_res_block,
    make_res_layer,
)


def _tv_block(block_cls, inplanes, planes, stride):
    out = planes * block_cls.expansion
    downsample = None
    if stride != 1 or inplanes != out:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, out, 1, stride=stride, bias=False),
            nn.BatchNorm2d(out))
    return block_cls(inplanes, planes, stride=stride, downsample=downsample)


@pytest.mark.parametrize('name,tv_cls,inplanes,planes,stride', [
    ('BasicBlock', tv_resnet.BasicBlock, 16, 16, 1),
    ('BasicBlock', tv_resnet.BasicBlock, 16, 32, 2),
    ('Bottleneck', tv_resnet.Bottleneck, 16, 4, 1),
    ('Bottleneck', tv_resnet.Bottleneck, 32, 8, 2),
])
def test_block_matches_torchvision(name, tv_cls, inplanes, planes, stride):
    torch.manual_seed(0)
    ours = make_res_block(name, inplanes, planes, stride=stride)
    ref = _tv_block(tv_cls, inplanes, planes, stride)
    assert list(ours.state_dict()) == list(ref.state_dict())
    ours.load_state_dict(ref.state_dict(), strict=True)
    # Non-trivial BN statistics so the check is not vacuous.
    for module in ref.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.5, 1.5)
    ours.load_state_dict(ref.state_dict(), strict=True)
    ours.eval()
    ref.eval()
    x = torch.randn(2, inplanes, 8, 8)
    torch.testing.assert_close(ours(x), ref(x))


def test_shortcut_rules():
    assert build_shortcut(16, 16, 1) is None
    assert build_shortcut(16, 32, 1) is not None
    assert build_shortcut(16, 16, 2) is not None
    assert make_res_block('BasicBlock', 16, 16).downsample is None
    # A Bottleneck changes the width (4x), so it needs a projection.
    assert make_res_block('Bottleneck', 16, 16).downsample is not None
    assert make_res_block('Bottleneck', 64, 16).downsample is None


def test_make_res_layer():
    layer = make_res_layer(Bottleneck, 64, 32, 3, stride=2)
    assert len(layer) == 3
    assert [b.stride for b in layer] == [2, 1, 1]
    assert layer[0].downsample is not None
    assert layer[1].downsample is None and layer[2].downsample is None
    assert layer[0].conv2.stride == (2, 2)  # pytorch style
    assert layer[1].conv1.in_channels == 128
    out = layer(torch.randn(1, 64, 8, 8))
    assert out.shape == (1, 128, 4, 4)
    assert 'downsample.0.weight' in dict(layer[0].named_parameters())
    assert 'downsample.1.weight' in dict(layer[0].named_parameters())


def test_caffe_style_and_dilation():
    block = Bottleneck(16, 4, stride=2, style='caffe',
                       downsample=build_shortcut(16, 16, 2))
    assert block.conv1.stride == (2, 2) and block.conv2.stride == (1, 1)
    block = BasicBlock(8, 8, dilation=2)
    assert block.conv1.dilation == (2, 2) and block.conv1.padding == (2, 2)
    assert block(torch.randn(1, 8, 6, 6)).shape == (1, 8, 6, 6)


def test_with_cp_same_output_and_grads():
    torch.manual_seed(0)
    plain = make_res_block('BasicBlock', 8, 16, stride=2)
    ckpt = make_res_block('BasicBlock', 8, 16, stride=2, with_cp=True)
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 8, 8, 8)
    x1 = x.clone().requires_grad_()
    x2 = x.clone().requires_grad_()
    out1, out2 = plain(x1), ckpt(x2)
    torch.testing.assert_close(out1, out2)
    out1.square().sum().backward()
    out2.square().sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad)
    torch.testing.assert_close(plain.conv1.weight.grad,
                               ckpt.conv1.weight.grad)
    # A detached input (the start of a local module) still trains the block.
    plain.zero_grad()
    ckpt.zero_grad()
    plain(x).sum().backward()
    ckpt(x).sum().backward()
    torch.testing.assert_close(plain.conv2.weight.grad,
                               ckpt.conv2.weight.grad)


def test_build_norm_layer():
    assert type(build_norm_layer(dict(type='BN'), 4)) is nn.BatchNorm2d
    assert isinstance(build_norm_layer(dict(type='SyncBN'), 4),
                      nn.SyncBatchNorm)
    frozen = build_norm_layer(dict(type='BN', requires_grad=False), 4)
    assert not any(p.requires_grad for p in frozen.parameters())
    bn = build_norm_layer(dict(type='BN', eps=1e-3, momentum=0.3), 4)
    assert bn.eps == 1e-3 and bn.momentum == 0.3
    with pytest.raises(KeyError):
        build_norm_layer(dict(type='LN'), 4)
    block = make_res_block('BasicBlock', 4, 8, norm_cfg=dict(type='SyncBN'))
    assert isinstance(block.bn1, nn.SyncBatchNorm)
    assert isinstance(block.downsample[1], nn.SyncBatchNorm)


def test_get_block():
    assert get_block('BasicBlock') is BasicBlock
    assert get_block(Bottleneck) is Bottleneck
    with pytest.raises(KeyError):
        get_block('Basic')
    with pytest.raises(TypeError):
        get_block(nn.Conv2d)


def test_layer_spec_feature_size():
    spec = LocalLayerSpec('layer4.0', 'BasicBlock', 256, 512, 512, 2, 32)
    assert spec.feature_size(224) == (7, 7)
    assert spec.feature_size((225, 100)) == (8, 4)
