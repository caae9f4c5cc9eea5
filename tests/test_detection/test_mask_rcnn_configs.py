"""The Mask R-CNN configs parse, carry the recipe and build on CPU."""
import os.path as osp

import pytest

pytest.importorskip('mmdet')

from mmdet.registry import MODELS  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
COCO_CONFIGS = {
    'configs/mask_rcnn_auglocal_r34_coco.py':
    'work_dirs/auglocal_r34_imagenet/export/backbone.pth',
    'configs/mask_rcnn_bp_r34_coco.py':
    'work_dirs/bp_r34_imagenet/export/backbone.pth',
    'configs/mask_rcnn_mlaan_r34_coco.py':
    'work_dirs/mlaan_r34_imagenet/export/backbone.pth',
}
DEMO_CONFIG = 'configs/demo/mask_rcnn_r34_synthetic.py'


def _load(path):
    return Config.fromfile(osp.join(ROOT, path))


@pytest.mark.parametrize('path', sorted(COCO_CONFIGS))
def test_coco_config_recipe(path):
    cfg = _load(path)
    assert cfg.default_scope == 'mmdet'
    assert 'auglocal_det' in cfg.custom_imports['imports']

    backbone = cfg.model.backbone
    assert backbone.type == 'LocalResNet' and backbone.depth == 34
    assert backbone.init_cfg == dict(
        type='Pretrained', checkpoint=COCO_CONFIGS[path])
    # mmdet's fine-tuning defaults for ResNet backbones
    assert backbone.frozen_stages == 1 and backbone.norm_eval
    assert cfg.model.neck.in_channels == [64, 128, 256, 512]
    assert cfg.model.roi_head.bbox_head.num_classes == 80

    optimizer = cfg.optim_wrapper.optimizer
    assert optimizer.type == 'AdamW' and 'momentum' not in optimizer
    assert (optimizer.lr, optimizer.weight_decay) == (0.0002, 0.05)
    assert cfg.optim_wrapper.paramwise_cfg.norm_decay_mult == 0.
    assert cfg.train_cfg.max_epochs == 12
    assert cfg.train_dataloader.batch_size == 2
    assert cfg.auto_scale_lr.base_batch_size == 16
    assert cfg.val_evaluator.metric == ['bbox', 'segm']


def test_demo_config():
    cfg = _load(DEMO_CONFIG)
    assert cfg.model.backbone.type == 'LocalResNet'
    assert cfg.model.roi_head.bbox_head.num_classes == 5
    assert cfg.model.roi_head.mask_head.num_classes == 5
    assert cfg.train_dataloader.dataset.metainfo.classes == (
        'circle', 'square', 'triangle', 'star', 'cross')
    assert cfg.test_dataloader.dataset.ann_file == \
        'annotations/instances_val.json'
    assert cfg.test_evaluator.ann_file.endswith('instances_val.json')
    assert cfg.optim_wrapper.optimizer.type == 'AdamW'


@pytest.mark.parametrize(
    'path', ['configs/mask_rcnn_auglocal_r34_coco.py', DEMO_CONFIG])
def test_build_detector(path):
    init_default_scope('mmdet')
    cfg = _load(path)
    cfg.model.backbone.init_cfg = None  # no pretrained file needed
    model = MODELS.build(cfg.model)
    assert type(model).__name__ == 'MaskRCNN'
    assert type(model.backbone).__name__ == 'LocalResNet'
    assert [c.in_channels for c in model.neck.lateral_convs] == \
        [64, 128, 256, 512]
