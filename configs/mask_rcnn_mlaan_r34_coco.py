# Mask R-CNN R-34-FPN on COCO, fine-tuned from a ResNet-34 pretrained on
# ImageNet with MLAAN (configs/mlaan_r34_imagenet.py). Same recipe as the
# AugLocal config; only the backbone file differs (the export holds the
# backbone alone: no leap modules, no EMA twins).
_base_ = './mask_rcnn_auglocal_r34_coco.py'

pretrained = 'work_dirs/mlaan_r34_imagenet/export/backbone.pth'
model = dict(
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
