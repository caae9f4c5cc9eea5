"""Tests of the backbones built from torchvision's definitions.

For MobileNetV2, EfficientNet-B0, RegNetX-400MF and VGG: torchvision's
state-dict keys and outputs, per-layer descriptions that match the
network, fresh layers of the same kind, every rule's head on them, and
``train_step`` equal to the summed-loss reference.
"""
import copy
import pickle

import pytest
import torch
import torch.nn as nn
import torchvision
from common_utils import assert_same_state, sgd

import auglocal_det  # noqa: F401  (registers the components)
from auglocal_det.engine.optim_wrappers import LocalOptimWrapper
from auglocal_det.errors import InputError
from auglocal_det.models.aux_heads import auglocal_stride_rule
from auglocal_det.registry import MODELS
from auglocal_det.structures import ClsDataSample

NUM_CLASSES = 5

#: name -> (backbone config, torchvision constructor and arguments, L,
#: image size of the tiny tests)
NETS = {
    'mobilenet_v2': (dict(type='LocalMobileNetV2', width_mult=0.25),
                     (torchvision.models.mobilenet_v2,
                      dict(width_mult=0.25)), 19, 16),
    'efficientnet_b0': (dict(type='LocalEfficientNet', width_mult=0.25),
                        None, 17, 16),
    'regnet_x_400mf': (dict(type='LocalRegNet'),
                       (torchvision.models.regnet_x_400mf, {}), 23, 16),
    'vgg11': (dict(type='LocalVGG', depth=11),
              (torchvision.models.vgg11_bn, {}), 8, 32),
}


def make_batch(seed: int, size: int, num: int = 4) -> dict:
    gen = torch.Generator().manual_seed(seed)
    inputs = [
        torch.randint(0, 256, (3, size, size), dtype=torch.uint8,
                      generator=gen) for _ in range(num)
    ]
    labels = torch.randint(0, NUM_CLASSES, (num, ), generator=gen)
    return dict(
        inputs=inputs,
        data_samples=[ClsDataSample().set_gt_label(int(y)) for y in labels])


def classifier_cfg(net: str, aux_head=None, **backbone) -> dict:
    cfg, _, _, size = NETS[net]
    return dict(
        type='LocalImageClassifier',
        backbone=dict(cfg, **backbone),
        aux_head=aux_head,
        num_classes=NUM_CLASSES,
        image_size=size,
        rule='bp' if aux_head is None else 'local')


def _load_into(tv_model: nn.Module, state_dict: dict) -> nn.Module:
    """Strict load (the torchvision model may live on the meta device)."""
    tv_model.load_state_dict(state_dict, strict=True, assign=True)
    return tv_model.eval()


# ------------------------------------------------ torchvision equivalence
@pytest.mark.parametrize('net,tv_fn,tv_kwargs,head', [
    ('mobilenet_v2', torchvision.models.mobilenet_v2,
     dict(width_mult=0.25), None),
    ('efficientnet_b0', torchvision.models.efficientnet_b0, {}, None),
    ('regnet_x_400mf', torchvision.models.regnet_x_400mf, {}, None),
    ('vgg13', torchvision.models.vgg13_bn, {},
     dict(type='VGGClassifierHead')),
])
def test_same_keys_and_outputs_as_torchvision(net, tv_fn, tv_kwargs, head):
    """The backbone has the torchvision model's keys but its classifier's,
    computes its features, and the classifier's weights load strictly into
    torchvision's model, which then gives the same logits."""
    if net == 'efficientnet_b0':
        backbone = dict(type='LocalEfficientNet')
    elif net == 'vgg13':
        backbone = dict(type='LocalVGG', depth=13)
    else:
        backbone = NETS[net][0]
    torch.manual_seed(0)
    model = MODELS.build(
        dict(
            type='LocalImageClassifier',
            backbone=backbone,
            head=head,
            num_classes=NUM_CLASSES,
            rule='bp'))
    model.eval()
    # VGG's 4096-wide classifier is not allocated twice
    with torch.device('meta' if net == 'vgg13' else 'cpu'):
        tv_model = tv_fn(num_classes=NUM_CLASSES, **tv_kwargs)
    tv_keys = list(tv_model.state_dict())
    head_keys = [k for k in tv_keys if k.startswith(('classifier.', 'fc.'))]
    assert list(model.backbone.state_dict()) == [
        k for k in tv_keys if k not in head_keys
    ]
    tv_state = model.backbone.to_torchvision_state_dict(model.state_dict())
    assert list(tv_state) == tv_keys
    tv_model = _load_into(tv_model, tv_state)

    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        if hasattr(tv_model, 'features'):
            tv_feat = tv_model.features(x)
        else:
            tv_feat = tv_model.trunk_output(tv_model.stem(x))
        feat, = model.backbone(x)
        torch.testing.assert_close(feat, tv_feat, rtol=0, atol=0)
        torch.testing.assert_close(
            model(x), tv_model(x), rtol=1e-5, atol=1e-6)


def test_cifar_stem():
    """stem_stride=1 (the CIFAR variants) changes only the stem's stride."""
    for cfg in (dict(type='LocalMobileNetV2', width_mult=0.25),
                dict(type='LocalEfficientNet', width_mult=0.25),
                dict(type='LocalRegNet')):
        imagenet = MODELS.build(cfg)
        cifar = MODELS.build(dict(cfg, stem_stride=1))
        assert list(cifar.state_dict()) == list(imagenet.state_dict())
        specs = cifar.local_layer_specs()
        assert specs[0].stride == 1 and specs[-1].downsample == 16
        assert specs[-1].feature_size(32) == (2, 2)
        assert imagenet.local_layer_specs()[-1].feature_size(32) == (1, 1)


# ------------------------------------------------------ layer descriptions
@pytest.mark.parametrize('cfg,num_layers,widths', [
    (dict(type='LocalMobileNetV2'), 19,
     [32, 16, 24, 24, 32, 32, 32, 64, 64, 64, 64, 96, 96, 96, 160, 160, 160,
      320, 1280]),
    (dict(type='LocalEfficientNet'), 17,
     [32, 16, 24, 24, 40, 40, 80, 80, 80, 112, 112, 112, 192, 192, 192,
      192, 1280]),
    (dict(type='LocalRegNet'), 23, [32, 32, 64, 64] + [160] * 7 + [400] * 12),
    (dict(type='LocalVGG', depth=13), 10,
     [64, 64, 128, 128, 256, 256, 512, 512, 512, 512]),
    (dict(type='LocalVGG', depth=19), 16,
     [64] * 2 + [128] * 2 + [256] * 4 + [512] * 8),
])
def test_full_size_layer_counts(cfg, num_layers, widths):
    """L and the widths of the full-size networks (built on meta)."""
    with torch.device('meta'):
        backbone = MODELS.build(cfg)
    specs = backbone.local_layer_specs()
    assert backbone.num_local_layers == len(specs) == num_layers
    assert [s.out_channels for s in specs] == widths
    assert specs[-1].downsample == 32
    assert len(backbone.local_layers()) == num_layers
    # every parameter belongs to exactly one local layer
    params = [p for layer in backbone.local_layers()
              for p in layer.parameters()]
    assert len(params) == len({id(p) for p in params}) == len(
        list(backbone.parameters()))


@pytest.mark.parametrize('net', list(NETS))
@pytest.mark.parametrize('image_size', [32, 35])
def test_layer_specs_match_the_network(net, image_size):
    """Running the local layers in order gives the described widths and
    sizes (odd sizes too), and equals the backbone's forward."""
    cfg = dict(NETS[net][0], out_indices=(-1, ))
    if net != 'vgg11':
        cfg['stem_stride'] = 1
    backbone = MODELS.build(cfg).eval()
    specs = backbone.local_layer_specs()
    assert len(specs) == NETS[net][2]
    x = torch.randn(1, 3, image_size, image_size)
    feat = x
    with torch.no_grad():
        for spec, layer in zip(specs, backbone.local_layers()):
            assert feat.shape[1] == spec.in_channels, spec.name
            feat = layer(feat)
            assert feat.shape[1] == spec.out_channels, spec.name
            assert tuple(feat.shape[2:]) == spec.feature_size(
                image_size), spec.name
        out, = backbone(x)
    torch.testing.assert_close(out, feat, rtol=0, atol=0)


def _shapes(module: nn.Module):
    return [tuple(p.shape) for p in module.parameters()]


@pytest.mark.parametrize('net', list(NETS))
def test_fresh_layer_is_a_new_layer_of_the_same_kind(net):
    """A fresh layer with the layer's own input width and stride has the
    layer's parameter shapes, new parameters and its output shape."""
    backbone = MODELS.build(NETS[net][0]).eval()
    specs = backbone.local_layer_specs()
    for spec, layer in zip(specs[1:], backbone.local_layers()[1:]):
        fresh, out_channels = spec.fresh_layer(spec.in_channels,
                                               spec.stride)
        assert out_channels == spec.out_channels
        assert _shapes(fresh) == _shapes(layer), spec.name
        assert not {id(p) for p in fresh.parameters()} & {
            id(p) for p in layer.parameters()}
        x = torch.randn(1, spec.in_channels, 8, 8)
        with torch.no_grad():
            assert fresh.eval()(x).shape == layer(x).shape
    # the descriptions travel with a pickled model
    assert pickle.loads(pickle.dumps(specs)) == specs
    if specs[0].block == 'stem':
        with pytest.raises(InputError, match='no definition'):
            specs[0].fresh_layer(3)
    with pytest.raises(InputError, match='with_cp'):
        specs[-1].fresh_layer(specs[-1].in_channels, with_cp=True)


def test_stride_rules():
    """'auto' keeps the official width rule for ResNets and VGG and follows
    the resolution for the others; every AugLocal head ends at the
    backbone's final resolution on MobileNetV2."""
    for cfg, rule in ((dict(type='LocalResNet', depth=34), 'width'),
                      (dict(type='LocalVGG', depth=13), 'width'),
                      (dict(type='LocalMobileNetV2'), 'resolution'),
                      (dict(type='LocalEfficientNet'), 'resolution'),
                      (dict(type='LocalRegNet'), 'resolution')):
        with torch.device('meta'):
            specs = MODELS.build(cfg).local_layer_specs()
        assert auglocal_stride_rule(specs) == rule, cfg
    with torch.device('meta'):
        model = MODELS.build(
            classifier_cfg(
                'mobilenet_v2', dict(type='AugLocalAuxHead', depth=4)))
    for head in model.aux_heads:
        start = model.layer_specs[head.layer_index].downsample
        total = 1
        for stride in head.block_strides:
            total *= stride
        assert start * total == model.layer_specs[-1].downsample
    # the official VGG rule: one halving per change of width
    with torch.device('meta'):
        specs = MODELS.build(dict(type='LocalVGG',
                                  depth=13)).local_layer_specs()
        head = MODELS.build(
            dict(type='AugLocalAuxHead', depth=3, stride_rule='width-change',
                 layer_index=0, layer_specs=specs, hidden_channels=(512,
                                                                    512)))
    assert head.sampled_layers == [3, 6, 9]
    assert head.block_strides == [2, 2, 1]
    assert isinstance(head.hidden_fc[0], nn.Linear)
    assert head.hidden_fc[0].out_features == 512
    with pytest.raises(InputError, match='stride_rule'):
        MODELS.build(
            dict(type='AugLocalAuxHead', stride_rule='pool', layer_index=0,
                 layer_specs=specs))


# ------------------------------------------------------------------ rules
HEADS = {
    'auglocal': dict(type='AugLocalAuxHead', depth=2),
    'dgl': dict(type='DGLAuxHead'),
    'infopro': dict(type='InfoProAuxHead'),
    'predsim': dict(type='PredSimAuxHead'),
}


@pytest.mark.parametrize('net', list(NETS))
@pytest.mark.parametrize('rule', list(HEADS))
def test_every_rule_builds_and_gives_a_loss(net, rule):
    torch.manual_seed(0)
    model = MODELS.build(
        classifier_cfg(net, HEADS[rule], **({} if net == 'vgg11' else dict(
            stem_stride=1))))
    data = model.data_preprocessor(make_batch(0, NETS[net][3], num=2),
                                   True)
    losses = model(**data, mode='loss')
    loss_keys = [k for k in losses if k.startswith('loss_')]
    assert len(loss_keys) == NETS[net][2]
    assert all(torch.isfinite(losses[k]) for k in loss_keys)


def test_mlaan_refuses_other_backbones():
    with pytest.raises(InputError, match='MLAAN'):
        MODELS.build(
            dict(
                classifier_cfg('mobilenet_v2', dict(type='MLAANAuxHead')),
                type='MLAANImageClassifier'))


@pytest.mark.parametrize('net', list(NETS))
@pytest.mark.parametrize('rule', ['auglocal', 'dgl'])
def test_train_step_equals_reference(net, rule):
    """One update with one backward per local module gives the weights and
    BN statistics of summed losses, one backward and one SGD step."""
    backbone = {} if net == 'vgg11' else dict(stem_stride=1)
    if net == 'efficientnet_b0':
        backbone['stochastic_depth_prob'] = 0.
    torch.manual_seed(0)
    model = MODELS.build(classifier_cfg(net, HEADS[rule], **backbone))
    ref = copy.deepcopy(model)
    data = make_batch(1, NETS[net][3])
    log_vars = model.train_step(data, LocalOptimWrapper(sgd(model)))
    ref_opt = sgd(ref)
    ref_data = ref.data_preprocessor(data, True)
    loss, _ = ref.parse_losses(ref(**ref_data, mode='loss'))
    loss.backward()
    ref_opt.step()
    assert_same_state(model, ref)
    assert len([k for k in log_vars if k.startswith('loss_l')
                ]) == NETS[net][2]
