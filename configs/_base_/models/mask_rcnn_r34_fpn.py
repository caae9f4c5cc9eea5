# Mask R-CNN with a ResNet-34 + FPN, built on mmdet's R-50 model base.
#
# The backbone is our LocalResNet in plain mode: a drop-in for mmdet's
# ResNet (same arguments, outputs and parameter names), so weights exported
# by an AugLocal or BP ImageNet run load as they are. Everything else
# (frozen stem and stage 1, BN in eval mode, RPN/RoI heads, train/test
# settings) is mmdet's default. The base has no pretrained weights; the
# leaf configs set model.backbone.init_cfg.
_base_ = 'mmdet::_base_/models/mask-rcnn_r50_fpn.py'

custom_imports = dict(imports=['auglocal_det'], allow_failed_imports=False)

model = dict(
    backbone=dict(type='LocalResNet', depth=34, init_cfg=None),
    # ResNet-34's BasicBlock stages have 64, 128, 256 and 512 channels.
    neck=dict(in_channels=[64, 128, 256, 512]))
