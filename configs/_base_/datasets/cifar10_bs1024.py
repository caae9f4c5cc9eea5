# CIFAR-10 (python version: data/cifar10/cifar-10-batches-py/), batch 1024
# on one GPU, as the AugLocal paper (Ma et al., ICLR 2024) and its official
# code (train.py): training images reflect-padded by 4 pixels, random
# 32 x 32 crop, horizontal flip; test images unchanged. Normalisation with
# the CIFAR mean/std of that code, on the device (data_preprocessor; the
# Runner merges it into the model config).
dataset_type = 'CIFAR10'
data_root = 'data/cifar10/'

data_preprocessor = dict(
    type='ImgDataPreprocessor',
    mean=[125.3, 123.0, 113.9],
    std=[63.0, 62.1, 66.7],
    bgr_to_rgb=False)

train_pipeline = [
    dict(type='RandomCropTensor', size=32, padding=4, padding_mode='reflect'),
    dict(type='RandomFlipTensor', prob=0.5),
    dict(type='PackClsInputs'),
]
test_pipeline = [dict(type='PackClsInputs')]

train_dataloader = dict(
    batch_size=1024,
    num_workers=8,
    persistent_workers=True,
    pin_memory=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        split='train',
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1024,
    num_workers=8,
    persistent_workers=True,
    pin_memory=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        split='test',
        pipeline=test_pipeline))
# network top-1; LayerwiseAccuracy adds every auxiliary head's top-1
val_evaluator = [
    dict(type='Accuracy', topk=(1, )),
    dict(type='LayerwiseAccuracy'),
]

test_dataloader = val_dataloader
test_evaluator = val_evaluator
