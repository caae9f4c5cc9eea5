# Demo-size Mask R-CNN R-34-FPN on the synthetic COCO-style shapes set, for
# CPU runs of minutes: the full demo's (tools/demo.py --full); the
# one-command demo (mask_rcnn_r34_synthetic.py) shortens its schedule.
#
# Inherits configs/mask_rcnn_auglocal_r34_coco.py: same detector type,
# backbone (the full LocalResNet-34: what the demo compares), frozen stem
# and stage 1, BN in eval mode, AdamW, CocoMetric (bbox and segm). Demo
# choices, for a toy set and a CPU budget of minutes:
# - data: 5 shape classes, 64 px images with 1-4 shapes of 10-28 px (the
#   pixel size of the shapes the demo backbones were pretrained on);
# - neck and heads slimmed to 64 channels, 64 RoIs per image, anchors
#   halved (16-256 px) for the small shapes;
# - schedule: 3 epochs, lr step after epoch 2, 50-iteration warm-up;
#   lr 1e-3 for the newly initialised neck and heads and 1e-4 for the
#   backbone (lr_mult=0.1), so that a short schedule trains the heads
#   without wiping out the pretrained weights in a few hundred steps.
# Write the data with tools/demo.py (or generate_coco_shapes in
# auglocal_det/testing/synthetic_shapes.py) and point the backbone at an export
#   --cfg-options model.backbone.init_cfg.checkpoint=PATH
# or at nothing (random init) with model.backbone.init_cfg=None.
_base_ = '../mask_rcnn_auglocal_r34_coco.py'

data_root = 'data/synthetic_coco/'
classes = ('circle', 'square', 'triangle', 'star', 'cross')
metainfo = dict(classes=classes)
img_scale = (64, 64)

pretrained = ('work_dirs/demo_full/auglocal_r34_synthetic_full/export/'
              'backbone.pth')
width = 64
model = dict(
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(out_channels=width),
    rpn_head=dict(
        in_channels=width,
        feat_channels=width,
        anchor_generator=dict(scales=[4])),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=width),
        bbox_head=dict(
            in_channels=width, fc_out_channels=256,
            num_classes=len(classes)),
        mask_roi_extractor=dict(out_channels=width),
        mask_head=dict(
            in_channels=width,
            conv_out_channels=width,
            num_classes=len(classes))),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=500, max_per_img=300),
        rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(
        rpn=dict(nms_pre=300, max_per_img=100),
        rcnn=dict(max_per_img=20)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor'))
]
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

optim_wrapper = dict(
    optimizer=dict(lr=0.001),
    paramwise_cfg=dict(custom_keys=dict(backbone=dict(lr_mult=0.1))))

max_epochs = 3
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
         end=50),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[2],
        gamma=0.1)
]
auto_scale_lr = dict(enable=False, base_batch_size=4)

default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))

# One seed for every start point: same head initialisation and data order.
randomness = dict(seed=0)
