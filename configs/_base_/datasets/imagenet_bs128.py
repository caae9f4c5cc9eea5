# ImageNet-1k, 128 images per GPU (x 8 GPUs = the paper's batch of 1024).
# Standard augmentation: RandomResizedCrop 224 + horizontal flip for
# training, resize the shorter side to 256 + centre crop 224 for testing.
# Images stay uint8 RGB tensors up to the model, whose data_preprocessor
# normalises them with the ImageNet mean/std.
dataset_type = 'ImageNet'
data_root = 'data/imagenet/'

train_pipeline = [
    dict(type='LoadImageTensor'),  # torchvision decoder (libjpeg-turbo)
    dict(type='RandomResizedCropTensor', size=224),
    dict(type='RandomFlipTensor', prob=0.5),
    dict(type='PackClsInputs'),
]
test_pipeline = [
    dict(type='LoadImageTensor'),
    dict(type='ResizeEdgeTensor', scale=256, edge='short'),
    dict(type='CenterCropTensor', size=224),
    dict(type='PackClsInputs'),
]

train_dataloader = dict(
    batch_size=128,
    num_workers=8,
    persistent_workers=True,
    pin_memory=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),  # stacks the uint8 images
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        split='train',  # data_root/train/<wnid>/*.JPEG
        num_classes=1000,  # checked against the class folders
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=128,
    num_workers=8,
    persistent_workers=True,
    pin_memory=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        split='val',  # data_root/val/<wnid>/*.JPEG (or ann_file=...)
        num_classes=1000,
        pipeline=test_pipeline))
# Accuracy of the network; LayerwiseAccuracy adds the top-1 of every
# auxiliary head (aux_top1/l00, ...), plotted by LayerwiseAccuracyPlotHook.
val_evaluator = [
    dict(type='Accuracy', topk=(1, 5)),
    dict(type='LayerwiseAccuracy'),
]

test_dataloader = val_dataloader
test_evaluator = val_evaluator
