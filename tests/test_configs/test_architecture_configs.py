"""The configs of the networks beyond ResNet: MobileNetV2, EfficientNet-B0,
RegNetX-400MF and VGG-19 on CIFAR-10 (BP, AugLocal d = 2, 3, 4, 6), VGG-13
on ImageNet (BP, DGL, AugLocal d = 4): each builds with the described
local modules, and one training iteration of each network runs at a tiny
size through the config's optimizer wrapper."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper

import auglocal_det  # noqa: F401  (registers the components)
from auglocal_det.registry import MODELS
from auglocal_det.structures import ClsDataSample

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
#: network of the config names -> number of local layers L
CIFAR_NETS = {'mobilenetv2': 19, 'efficientnetb0': 17, 'regnetx400mf': 23,
              'vgg19': 16}
DEPTHS = (2, 3, 4, 6)


def _cfg(name: str) -> Config:
    return Config.fromfile(osp.join(ROOT, 'configs', name))


def _build(cfg: Config, device: str = 'meta', **overrides):
    model = cfg.model.copy()
    model.setdefault('data_preprocessor', cfg.get('data_preprocessor'))
    model.update(overrides)
    with torch.device(device):
        return MODELS.build(model)


@pytest.mark.parametrize('net', list(CIFAR_NETS))
@pytest.mark.parametrize('depth', (None, ) + DEPTHS)
def test_cifar_configs(net, depth):
    """BP: one module; AugLocal d: K' = L - d modules, heads on the first
    L - d - 1 layers, the official recipe."""
    num_layers = CIFAR_NETS[net]
    name = (f'bp/bp_{net}_400e_cifar10.py' if depth is None else
            f'auglocal/auglocal-d{depth}_{net}_400e_cifar10.py')
    cfg = _cfg(name)
    assert cfg.train_dataloader.dataset.type == 'CIFAR10'
    assert cfg.optim_wrapper.optimizer.lr == 0.8
    assert cfg.train_cfg.max_epochs == 400
    model = _build(cfg)
    assert len(model.layer_specs) == num_layers
    assert model.num_classes == 10 and model.image_size == 32
    if depth is None:
        assert model.rule == 'bp' and model.num_modules == 1
        return
    assert model.num_modules == num_layers - depth
    assert [h.layer_index for h in model.aux_heads] == list(
        range(num_layers - depth - 1))
    assert model.aux_heads[0].depth == depth
    assert all(h.sampled_layers[-1] == num_layers - 1
               for h in model.aux_heads)
    # the auxiliary layers are of the sampled layers' kinds
    kinds = {type(b).__name__ for h in model.aux_heads for b in h.blocks}
    expected = dict(mobilenetv2={'InvertedResidual', 'Conv2dNormActivation'},
                    efficientnetb0={'MBConv', 'Sequential'},
                    regnetx400mf={'ResBottleneckBlock'},
                    vgg19={'Sequential'})[net]
    assert kinds == expected


@pytest.mark.parametrize('name,num_modules', [
    ('bp/bp_vgg13_200e_imagenet.py', 1),
    ('dgl/dgl_vgg13_200e_imagenet.py', 10),
    ('auglocal/auglocal-d4_vgg13_200e_imagenet.py', 10),
])
def test_vgg13_imagenet_configs(name, num_modules):
    cfg = _cfg(name)
    assert cfg.train_dataloader.dataset.type == 'ImageNet'
    model = _build(cfg)
    assert model.num_modules == num_modules
    assert len(model.layer_specs) == 10
    assert type(model.head).__name__ == 'VGGClassifierHead'
    assert model.head.classifier[0].out_features == 4096
    if 'auglocal' in name:
        head = model.aux_heads[0]
        # the auxiliary classifier of the paper: hidden width 512
        assert [m.out_features for m in head.hidden_fc
                if isinstance(m, torch.nn.Linear)] == [512, 512]
        assert head.fc.in_features == 512
        assert head.sampled_layers == [2, 4, 7, 9]  # 4.5 rounds to 4
        assert head.block_strides == [2, 2, 2, 1]


#: tiny versions of the networks: config, model overrides
TINY = {
    'mobilenetv2': ('auglocal/auglocal-d4_mobilenetv2_400e_cifar10.py',
                    dict(backbone=dict(width_mult=0.25))),
    'efficientnetb0': ('auglocal/auglocal-d4_efficientnetb0_400e_cifar10.py',
                       dict(backbone=dict(width_mult=0.25))),
    'regnetx400mf': ('auglocal/auglocal-d4_regnetx400mf_400e_cifar10.py',
                     dict()),
    'vgg19': ('auglocal/auglocal-d4_vgg19_400e_cifar10.py',
              dict(aux_head=dict(widen_factor=0.125))),
    'vgg13': ('auglocal/auglocal-d4_vgg13_200e_imagenet.py',
              dict(
                  aux_head=dict(widen_factor=0.125, hidden_channels=(16, 16)),
                  head=dict(hidden_channels=16),
                  num_classes=10,
                  image_size=32)),
}


@pytest.mark.parametrize('net', list(TINY))
def test_one_training_iteration(net):
    """One train_step of each network (AugLocal d = 4) on 32 x 32 images,
    through the optimizer wrapper of its config."""
    name, overrides = TINY[net]
    cfg = _cfg(name)
    cfg.merge_from_dict({f'model.{k}': v for k, v in overrides.items()})
    torch.manual_seed(0)
    model = _build(cfg, device='cpu')
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    gen = torch.Generator().manual_seed(0)
    data = dict(
        inputs=[
            torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8,
                          generator=gen) for _ in range(2)
        ],
        data_samples=[ClsDataSample().set_gt_label(i) for i in (1, 3)])
    before = [p.detach().clone() for p in model.parameters()]
    log_vars = model.train_step(data, wrapper)
    assert torch.isfinite(log_vars['loss'])
    assert len([k for k in log_vars if k.startswith('loss_l')
                ]) == model.num_modules
    moved = [not torch.equal(a, p) for a, p in zip(before,
                                                   model.parameters())]
    assert sum(moved) > 0.9 * len(moved)
