"""AugLocal's CIFAR auxiliary networks against the official code's counts.

The reference values were measured by building the networks of the
official AugLocal CIFAR code (ChenxiangMA/AugLocal, ``train.py`` with
``--local_module_num 16`` / ``55``, ``--aux_net_depth d``, with and without
``--pyramid --pyramid_coeff 0.5``; so K - d local modules and K - d - 1
auxiliary networks) on CPU with 10 classes: the parameters of every
auxiliary network, and forward multiply-accumulates per 32 x 32 image of
the backbone plus all auxiliary networks (FlopCounterMode). The ResNet-110
FLOPs are asserted in ``tests/test_utils/test_flops.py``.
"""
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from auglocal_det.models.aux_heads import local_learning_setting
from auglocal_det.registry import MODELS
from auglocal_det.utils.flops import count_forward_flops

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

pytestmark = pytest.mark.usefixtures('single_thread')

#: Parameters of all auxiliary networks, official code, by depth d.
AUX_PARAMS = {
    ('resnet32', False): {
        2: 1341058, 3: 1844664, 4: 2075566, 5: 2244068, 6: 2264602},
    ('resnet32', True): {
        2: 1341058, 3: 1511608, 4: 1705390, 5: 1684388, 6: 1727898},
    ('resnet110', False): {
        2: 5941576, 3: 8998014, 4: 11227380, 5: 13516714, 6: 15824352},
    ('resnet110', True): {
        2: 5941576, 3: 7240702, 4: 9044468, 5: 10279466, 6: 12466400},
}
#: Per-head parameters of ResNet-32 (heads on layers 0 .. K - d - 2).
R32_HEADS = {
    (2, False): [72906] * 6 + [76938] + [132362] * 4 + [148618] * 2,
    (3, False): [77578, 91466] + [146890] * 4 + [150922] * 3 +
    [206346] * 2 + [222602],
    (4, False): [151562] * 3 + [165450] * 3 + [169482] + [224906] * 3 +
    [280330],
    (5, False): [170122] * 4 + [239434] * 2 + [243466] * 2 + [298890] * 2,
    (6, False): [174794, 188682, 244106, 244106, 257994, 257994, 262026,
                 317450, 317450],
    (3, True): [77578, 91466] + [146890] * 4 + [76938] + [132362] * 4 +
    [148618],
    (4, True): [151562] * 3 + [165450] + [146890] * 2 + [150922] * 3 +
    [206346, 132362],
    (5, True): [170122] * 3 + [165450] * 3 + [169482] + [150922] * 2 +
    [206346],
    (6, True): [174794, 188682, 170122, 170122, 239434, 165450, 169482,
                224906, 224906],
}
#: GMACs per 32 x 32 image, ResNet-32 backbone + all auxiliary networks.
R32_GMACS = {
    False: {2: 0.174, 3: 0.221, 4: 0.259, 5: 0.288, 6: 0.308},
    True: {2: 0.174, 3: 0.193, 4: 0.221, 5: 0.241, 6: 0.256},
}
R32_BP_GMACS = 0.069


def _model(arch, depth, pyramid, device='meta'):
    setting = local_learning_setting(
        'auglocal', arch, aux_depth=depth, pyramid=pyramid, tau=0.5,
        cifar_reproduction=True)
    with torch.device(device):
        return MODELS.build(
            dict(
                type='LocalImageClassifier',
                backbone=setting.backbone,
                aux_head=setting.aux_head,
                num_classes=10,
                image_size=32,
                split_points=setting.split_points))


def _params(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize('arch,pyramid', sorted(AUX_PARAMS))
@pytest.mark.parametrize('depth', [2, 3, 4, 5, 6])
def test_aux_params_equal_official(arch, pyramid, depth):
    model = _model(arch, depth, pyramid)
    num_layers = 16 if arch == 'resnet32' else 55
    assert model.num_aux == num_layers - depth - 1
    assert _params(model.aux_heads) == AUX_PARAMS[(arch, pyramid)][depth]
    if arch == 'resnet32':
        ref = R32_HEADS.get((depth, pyramid), R32_HEADS[(depth, False)])
        assert [_params(h) for h in model.aux_heads] == ref


@pytest.mark.parametrize('pyramid', [False, True])
@pytest.mark.parametrize('depth', [2, 3, 4, 5, 6])
def test_resnet32_flops_equal_official(depth, pyramid):
    report = count_forward_flops(_model('resnet32', depth, pyramid, 'cpu'))
    assert round(report.network / 2e9, 3) == R32_BP_GMACS
    assert round(report.total / 2e9, 3) == R32_GMACS[pyramid][depth]


@pytest.mark.parametrize('arch', ['r32', 'r110'])
@pytest.mark.parametrize('depth', [2, 3, 4, 6])
def test_table1_configs_have_the_official_networks(arch, depth):
    """The Table 1 configs (pyramid, tau 0.5) build the official heads."""
    cfg = Config.fromfile(
        osp.join(ROOT, 'configs', 'auglocal',
                 f'auglocal-d{depth}_{arch}_400e_cifar10.py'))
    with torch.device('meta'):
        model = MODELS.build(cfg.model)
    name = 'resnet32' if arch == 'r32' else 'resnet110'
    assert _params(model.aux_heads) == AUX_PARAMS[(name, True)][depth]
