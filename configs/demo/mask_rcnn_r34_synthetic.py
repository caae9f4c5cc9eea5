# The one-command demo's Mask R-CNN R-34-FPN (tools/demo.py): the detector,
# data and optimizer of mask_rcnn_r34_synthetic_full.py (5 shape classes,
# 64 px images, neck and heads slimmed to 64 channels, AdamW lr 1e-3 with
# backbone lr x0.1, stem and stage 1 frozen, BN in eval mode), fine-tuned
# for one epoch (125 iterations of batch 4) after the 50-iteration warm-up
# instead of three, so that the three fine-tunings fit the demo's 10
# minutes on 2 CPU cores. A short schedule is where a pretrained backbone
# shows most; the full demo's three epochs are the longer comparison.
#   --cfg-options model.backbone.init_cfg.checkpoint=PATH   (an export)
#   --cfg-options model.backbone.init_cfg=None              (random init)
_base_ = './mask_rcnn_r34_synthetic_full.py'

pretrained = 'work_dirs/demo/auglocal_r34_synthetic/export/backbone.pth'
model = dict(
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=pretrained)))

max_epochs = 1
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
         end=50),
    # the lr step of the longer schedules falls after the last epoch here
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[max_epochs],
        gamma=0.1)
]
default_hooks = dict(checkpoint=dict(interval=max_epochs))
