"""``tools/train.py --amp`` on the ImageNet recipes: each optimizer wrapper
becomes its mixed-precision twin, the rest of the config unchanged."""
import os.path as osp

import pytest
from common_utils import load_tool
from mmengine.config import Config

from auglocal_det.errors import InputError

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _train_tool():
    return load_tool('tools/train.py', 'train_tool')


@pytest.mark.parametrize('config,expected', [
    ('auglocal_r34_imagenet.py', 'AmpLayerwiseLocalOptimWrapper'),
    ('auglocal_r34_imagenet_pipe.py', 'AmpLocalOptimWrapper'),
    ('bp_r34_imagenet.py', 'AmpLocalOptimWrapper'),
])
def test_amp_twin_of_every_recipe(config, expected):
    tool = _train_tool()
    cfg = Config.fromfile(osp.join(ROOT, 'configs', config))
    optimizer = cfg.optim_wrapper.optimizer
    tool.enable_amp(cfg)
    assert cfg.optim_wrapper.type == expected
    assert cfg.optim_wrapper.loss_scale == 'dynamic'
    assert cfg.optim_wrapper.optimizer == optimizer
    tool.enable_amp(cfg)  # already mixed precision: unchanged
    assert cfg.optim_wrapper.type == expected


def test_amp_refuses_an_unknown_wrapper():
    tool = _train_tool()
    cfg = Config(dict(optim_wrapper=dict(type='MyWrapper')))
    with pytest.raises(InputError, match="'MyWrapper'"):
        tool.enable_amp(cfg)
