# Mask R-CNN R-34-FPN on COCO, fine-tuned from a ResNet-34 pretrained on
# ImageNet with AugLocal (configs/auglocal_r34_imagenet.py).
#
# Where the settings come from:
# - AugLocal paper (Ma et al., ICLR 2024, COCO experiment of Table 7): Mask
#   R-CNN with an ImageNet-pretrained ResNet-34 + FPN, fine-tuned with AdamW
#   on the 1x schedule (12 epochs, lr steps at epochs 8 and 11), total batch
#   16 (2 images per GPU x 8 GPUs).
# - AdamW lr=2e-4, weight_decay=0.05 and no weight decay on norm layers:
#   we could not confirm the paper's values, so these follow mmdet's own
#   AdamW recipe for ResNet backbones (configs/resnet_strikes_back/
#   mask-rcnn_r50-rsb-pre_fpn_1x_coco.py). Treat them as ours, not the
#   paper's.
# - Everything else is mmdet's default (model, 1333x800 single-scale data
#   pipeline with flip, 500-iteration linear warm-up, COCO bbox/segm
#   evaluation with CocoMetric).
#
# The backbone file is the one the ImageNet run exports; to start from
# another file:
#   python tools/train.py configs/mask_rcnn_auglocal_r34_coco.py \
#       --cfg-options model.backbone.init_cfg.checkpoint=PATH
_base_ = [
    '_base_/models/mask_rcnn_r34_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]

# mmdet's runtime base does not load our package; the model base does, and
# this line keeps it explicit for readers of the dumped config. The second
# module (it imports mmdet) registers CheckedCocoDataset.
custom_imports = dict(
    imports=['auglocal_det', 'auglocal_det.datasets.checked_coco'],
    allow_failed_imports=False)

pretrained = 'work_dirs/auglocal_r34_imagenet/export/backbone.pth'
model = dict(
    backbone=dict(
        # _delete_: the model base has init_cfg=None (random init)
        init_cfg=dict(_delete_=True, type='Pretrained',
                      checkpoint=pretrained)))

# 2 images per GPU x 8 GPUs = 16 (paper and mmdet 1x). CheckedCocoDataset:
# mmdet's CocoDataset that reports bad annotations and class names that do
# not match the file instead of dropping them silently.
train_dataloader = dict(
    batch_size=2, num_workers=2, dataset=dict(type='CheckedCocoDataset'))
val_dataloader = dict(dataset=dict(type='CheckedCocoDataset'))
test_dataloader = dict(dataset=dict(type='CheckedCocoDataset'))
# atomic checkpoint writes, one job per work dir, the heads' num_classes
# checked against the data, a checkpoint on pre-emption, a stop at the first
# NaN or Inf loss (and no checkpoint with non-finite weights)
# (docs/reliability.md)
default_hooks = dict(
    checkpoint=dict(type='AtomicCheckpointHook'),
    work_dir_lock=dict(type='WorkDirLockHook'),
    train_data_check=dict(type='TrainDataCheckHook'),
    preemption=dict(type='PreemptionCheckpointHook'),
    non_finite_loss=dict(type='NonFiniteLossHook'))

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(_delete_=True, type='AdamW', lr=0.0002, weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0., bypass_duplicate=True))

# `tools/train.py --auto-scale-lr` rescales lr for another total batch.
auto_scale_lr = dict(enable=False, base_batch_size=16)
