import pytest
import torch
import torchvision
from torch.nn.modules.batchnorm import _BatchNorm

from auglocal_det.models.backbones import (
    LocalCifarResNet,
    LocalLayerSpec,
    LocalResNet,
)
from auglocal_det.registry import MODELS


def _randomize_bn(model):
    """Non-trivial BN parameters and statistics."""
    for module in model.modules():
        if isinstance(module, _BatchNorm):
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)


def _tv_features(tv, x):
    x = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
    outs = []
    for name in ('layer1', 'layer2', 'layer3', 'layer4'):
        x = getattr(tv, name)(x)
        outs.append(x)
    return outs


@pytest.mark.parametrize('depth', [18, 34, 50])
def test_matches_torchvision(depth):
    torch.manual_seed(0)
    tv = getattr(torchvision.models, f'resnet{depth}')()
    _randomize_bn(tv)
    ref_state = {k: v for k, v in tv.state_dict().items()
                 if not k.startswith('fc.')}
    model = LocalResNet(depth)
    assert list(model.state_dict()) == list(ref_state)
    model.load_state_dict(ref_state, strict=True)
    model.eval()
    tv.eval()
    x = torch.randn(1, 3, 48, 48)
    with torch.no_grad():
        outs = model(x)
        ref = _tv_features(tv, x)
        assert len(outs) == 4
        for out, expected in zip(outs, ref):
            torch.testing.assert_close(out, expected)
        # The local layers, applied in order, are the same network.
        h = x
        for layer in model.local_layers():
            h = layer(h)
        torch.testing.assert_close(h, outs[-1])


def test_local_layers_are_views():
    model = LocalResNet(18)
    num_params = len(list(model.parameters()))
    layers = model.local_layers()
    assert len(layers) == model.num_local_layers == 9
    assert len(list(model.parameters())) == num_params
    assert len(model.state_dict()) == len(LocalResNet(18).state_dict())
    params = {id(p) for layer in layers for p in layer.parameters()}
    assert params == {id(p) for p in model.parameters()}
    stem = layers[0]
    assert stem.conv1 is model.conv1 and stem.bn1 is model.bn1
    assert sorted(dict(stem.named_parameters())) == [
        'bn1.bias', 'bn1.weight', 'conv1.weight'
    ]
    assert layers[1] is model.layer1[0] and layers[-1] is model.layer4[1]


def test_resnet34_specs():
    specs = LocalResNet(34).local_layer_specs()
    assert len(specs) == 17
    assert all(isinstance(s, LocalLayerSpec) for s in specs)
    assert [s.planes for s in specs] == [64] * 4 + [128] * 4 + [256] * 6 + [
        512
    ] * 3
    assert specs[0] == LocalLayerSpec('stem', 'stem', 3, 64, 64, 4, 4)
    assert specs[4] == LocalLayerSpec('layer2.0', 'BasicBlock', 64, 128,
                                      128, 2, 8)
    assert specs[16].name == 'layer4.2' and specs[16].downsample == 32
    assert [s.feature_size(224) for s in specs[::4]] == [(56, 56), (28, 28),
                                                         (14, 14), (14, 14),
                                                         (7, 7)]


def test_spec_counts_large_and_cifar():
    with torch.device('meta'):
        r101 = LocalResNet(101).local_layer_specs()
        r50 = LocalResNet(50).local_layer_specs()
        r110 = LocalCifarResNet(110).local_layer_specs()
    r32 = LocalCifarResNet(32).local_layer_specs()
    assert len(r101) == 34
    assert [s.planes for s in r101] == [64] * 4 + [128] * 4 + [256] * 23 + [
        512
    ] * 3
    assert len(r50) == 17 and r50[1].block == 'Bottleneck'
    assert (r50[1].in_channels, r50[1].out_channels) == (64, 256)
    assert r50[2].in_channels == 256
    assert len(r32) == 16
    assert [s.planes for s in r32] == [16] * 6 + [32] * 5 + [64] * 5
    assert len(r110) == 55
    assert [s.planes for s in r110] == [16] * 19 + [32] * 18 + [64] * 18
    assert r32[0] == LocalLayerSpec('stem', 'stem', 3, 16, 16, 1, 1)
    assert [s.downsample for s in r32] == [1] * 6 + [2] * 5 + [4] * 5


def test_cifar_resnet():
    torch.manual_seed(0)
    model = LocalCifarResNet(32)
    model.init_weights()
    assert not hasattr(model, 'maxpool')
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    # CIFAR init: BN weight 1 everywhere (no zero-initialised residual).
    assert torch.all(model.layer1[0].bn2.weight == 1)
    outs = model(torch.randn(2, 3, 32, 32))
    assert [tuple(o.shape) for o in outs] == [(2, 16, 32, 32),
                                              (2, 32, 16, 16),
                                              (2, 64, 8, 8)]
    assert sum(p.numel() for p in model.parameters()) == 466256
    h = torch.randn(2, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        ref = model(h)[-1]
        for layer in model.local_layers():
            h = layer(h)
    torch.testing.assert_close(h, ref)
    with pytest.raises(KeyError):
        LocalCifarResNet(34)
    with pytest.raises(KeyError):
        LocalResNet(32)


def test_init_weights():
    torch.manual_seed(0)
    model = LocalResNet(18)
    model.init_weights()
    assert torch.all(model.layer1[0].bn2.weight == 0)
    assert torch.all(model.layer1[0].bn1.weight == 1)
    assert torch.all(model.layer2[0].downsample[1].weight == 1)
    std = model.layer1[0].conv1.weight.std().item()
    assert abs(std - (2 / (9 * 64))**0.5) < 0.01  # Kaiming fan_out
    model = LocalResNet(50, num_stages=1, out_indices=(0, ),
                        zero_init_residual=False)
    model.init_weights()
    assert torch.all(model.layer1[0].bn3.weight == 1)
    model = LocalResNet(50, num_stages=1, out_indices=(0, ))
    model.init_weights()
    assert torch.all(model.layer1[0].bn3.weight == 0)


def test_pretrained_init(tmp_path):
    torch.manual_seed(0)
    src = LocalResNet(18, zero_init_residual=False)
    _randomize_bn(src)
    path = str(tmp_path / 'r18.pth')
    torch.save(src.state_dict(), path)
    model = LocalResNet(
        18, init_cfg=dict(type='Pretrained', checkpoint=path))
    model.init_weights()
    for key, value in src.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value)


def test_frozen_stages():
    model = LocalResNet(18, frozen_stages=1, norm_eval=False)
    model.train()
    for module in (model.conv1, model.bn1, model.layer1):
        assert all(not p.requires_grad for p in module.parameters())
    assert not model.bn1.training
    for module in model.layer1.modules():
        if isinstance(module, _BatchNorm):
            assert not module.training
    assert all(p.requires_grad for p in model.layer2.parameters())
    assert model.layer2[0].bn1.training


def test_norm_eval_defaults_to_mmdet_value():
    assert LocalResNet(18).norm_eval
    assert not LocalResNet(18, norm_eval=False).norm_eval


def test_norm_eval():
    model = LocalResNet(18, norm_eval=True)
    assert model.train() is model
    assert model.training
    assert all(not m.training for m in model.modules()
               if isinstance(m, _BatchNorm))
    assert model.layer1[0].training


def test_with_cp():
    torch.manual_seed(0)
    model = LocalResNet(18, with_cp=True)
    ref = LocalResNet(18)
    ref.load_state_dict(model.state_dict())
    assert all(b.with_cp for b in model.local_layers()[1:])
    x = torch.randn(2, 3, 32, 32)
    out = model(x)[-1]
    ref_out = ref(x)[-1]
    torch.testing.assert_close(out, ref_out)
    out.sum().backward()
    ref_out.sum().backward()
    torch.testing.assert_close(model.layer1[0].conv1.weight.grad,
                               ref.layer1[0].conv1.weight.grad)


def test_stages_and_out_indices():
    model = LocalResNet(
        18, num_stages=3, strides=(1, 2, 1), dilations=(1, 1, 2),
        out_indices=(1, 2))
    outs = model(torch.randn(1, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(1, 128, 8, 8),
                                              (1, 256, 8, 8)]
    assert model.feat_dim == 256
    assert len(model.local_layers()) == 7
    assert model.local_layer_specs()[-1].downsample == 8
    assert not hasattr(model, 'layer4')


def test_build_from_config():
    model = MODELS.build(dict(type='LocalResNet', depth=18, out_indices=(3, )))
    assert isinstance(model, LocalResNet)
    assert model(torch.randn(2, 3, 32, 32))[0].shape == (2, 512, 1, 1)
    model = MODELS.build(dict(type='LocalCifarResNet', depth=20))
    assert isinstance(model, LocalCifarResNet)
    assert model.num_local_layers == 10


def test_matches_mmdet_resnet():
    pytest.importorskip('mmdet')
    from mmdet.models.backbones import ResNet
    torch.manual_seed(0)
    ref = ResNet(depth=34)
    ref.init_weights()
    _randomize_bn(ref)
    model = LocalResNet(34)
    assert list(model.state_dict()) == list(ref.state_dict())
    model.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 64)
    model.eval()
    ref.eval()
    with torch.no_grad():
        for out, expected in zip(model(x), ref(x)):
            torch.testing.assert_close(out, expected)
    # Same freezing behaviour.
    ref = ResNet(depth=34, frozen_stages=2, norm_eval=True)
    model = LocalResNet(34, frozen_stages=2, norm_eval=True)
    ref.train()
    model.train()
    assert ({n for n, p in model.named_parameters() if p.requires_grad} ==
            {n for n, p in ref.named_parameters() if p.requires_grad})
    assert ({n for n, m in model.named_modules() if m.training} ==
            {n for n, m in ref.named_modules() if m.training})
