# Mask R-CNN R-34-FPN on COCO, fine-tuned from a ResNet-34 pretrained on
# ImageNet with end-to-end back-propagation (the BP baseline of the AugLocal
# paper). Same recipe as the AugLocal config; only the backbone file
# differs.
_base_ = './mask_rcnn_auglocal_r34_coco.py'

pretrained = 'work_dirs/bp_r34_imagenet/export/backbone.pth'
model = dict(
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
