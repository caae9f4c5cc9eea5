# Demo-size Mask R-CNN R-34-FPN on the synthetic COCO-style shapes set, for
# CPU runs of minutes (tools/demo_det.py, the end-to-end test).
#
# Same model and optimizer as configs/mask_rcnn_auglocal_r34_coco.py; what
# changes is what a 128-pixel toy set needs: the data (5 shape classes,
# images kept at their 128x128 size), lighter RPN/RoI sampling, a short
# schedule and a short warm-up. Write the data with
#   python -c "from auglocal_det.datasets.synthetic import \
#       generate_coco_shapes as g; g('data/synthetic_coco')"
# (tools/demo_det.py does this) and point the backbone at an export with
#   --cfg-options model.backbone.init_cfg.checkpoint=PATH
# or at nothing (random init) with model.backbone.init_cfg=None.
_base_ = '../mask_rcnn_auglocal_r34_coco.py'

data_root = 'data/synthetic_coco/'
classes = ('circle', 'square', 'triangle', 'star', 'cross')
metainfo = dict(classes=classes)
img_scale = (96, 96)

pretrained = 'work_dirs/demo/auglocal_r34_synthetic/export/backbone.pth'
# The backbone is the full ResNet-34 (what the demo compares); the neck and
# heads are slimmed to 64 channels and fewer RoIs so that a CPU trains the
# model in minutes, and the anchors are halved (16-256 px) for the 15-42 px
# shapes of the 96 px images.
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

# Short schedule: lr steps at 2/3 and 11/12 of training, as 1x does.
max_epochs = 6
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
         end=50),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[4, 5],
        gamma=0.1)
]
auto_scale_lr = dict(enable=False, base_batch_size=4)

default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))

# One seed for all start points: same head initialisation and data order.
randomness = dict(seed=0)
