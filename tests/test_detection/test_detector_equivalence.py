"""Inside Mask R-CNN, LocalResNet (plain mode) is mmdet's ResNet.

The backbone-level equivalence lives in tests/test_models; this test checks
it where it matters to a user: the detector built from our config with
``type='LocalResNet'`` and with mmdet's ``type='ResNet'`` has the same
state-dict keys, the same trainable parameters (frozen stages) and, given
the same weights, the same multi-level features in eval and train mode.
"""
import copy
import os.path as osp

import pytest

pytest.importorskip('mmdet')

import torch  # noqa: E402
from mmdet.registry import MODELS  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(ROOT, 'configs/mask_rcnn_auglocal_r34_coco.py')


@pytest.fixture(scope='module')
def detectors():
    init_default_scope('mmdet')
    model_cfg = Config.fromfile(CONFIG).model
    model_cfg.backbone.init_cfg = None
    reference_cfg = copy.deepcopy(model_cfg)
    reference_cfg.backbone.type = 'ResNet'  # mmdet's own

    torch.manual_seed(0)
    reference = MODELS.build(reference_cfg)
    reference.init_weights()
    # Non-trivial BN statistics, so that eval-mode BN is exercised.
    with torch.no_grad():
        for name, buf in reference.named_buffers():
            if name.endswith('running_mean'):
                buf.uniform_(-0.5, 0.5)
            elif name.endswith('running_var'):
                buf.uniform_(0.5, 2.0)
    local = MODELS.build(model_cfg)
    return reference, local


def test_same_keys_and_trainable_parameters(detectors):
    reference, local = detectors
    assert type(local.backbone).__name__ == 'LocalResNet'
    assert type(reference.backbone).__name__ == 'ResNet'
    ref_state, local_state = reference.state_dict(), local.state_dict()
    assert list(local_state) == list(ref_state)
    assert {k: v.shape for k, v in local_state.items()} == \
        {k: v.shape for k, v in ref_state.items()}

    def trainable(model):
        return [n for n, p in model.named_parameters() if p.requires_grad]

    assert trainable(local) == trainable(reference)
    # frozen_stages=1 in the config: the stem and layer1 are frozen
    assert not any(n.startswith(('backbone.conv1', 'backbone.bn1',
                                 'backbone.layer1.'))
                   for n in trainable(local))


@pytest.mark.parametrize('mode', ['eval', 'train'])
def test_same_features(detectors, mode):
    reference, local = detectors
    local.load_state_dict(reference.state_dict(), strict=True)
    getattr(reference, mode)()
    getattr(local, mode)()
    if mode == 'train':  # norm_eval=True keeps every BN in eval mode
        assert not any(m.training for m in local.backbone.modules()
                       if isinstance(m, torch.nn.BatchNorm2d))
    torch.manual_seed(1)
    inputs = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        ref_feats = reference.extract_feat(inputs)
        local_feats = local.extract_feat(inputs)
    assert len(local_feats) == len(ref_feats) == 5
    for ref, out in zip(ref_feats, local_feats):
        assert out.shape == ref.shape
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
