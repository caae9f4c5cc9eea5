# The synthetic shapes data set in the ImageNet folder layout (8 classes,
# 36 x 36 JPEGs), made by tools/demo.py or by
#   python tools/misc/make_synthetic_data.py imagenet data/synthetic_imagenet
# (both read `synthetic_data` below). Same dataset class, transforms and
# metrics as ImageNet; the crops are scaled to the small images
# (RandomResizedCrop 32; resize 36 + centre crop 32, about ImageNet's
# 224/256 ratio).
dataset_type = 'ImageNet'
data_root = 'data/synthetic_imagenet/'
synthetic_classes = ('checker', 'circle', 'cross', 'ring', 'square', 'star',
                     'stripes', 'triangle')
# arguments of auglocal_det.datasets.generate_imagenet_shapes
synthetic_data = dict(
    num_train_per_class=200,
    num_val_per_class=50,
    image_size=36,
    seed=0,
    classes=synthetic_classes)

train_pipeline = [
    dict(type='LoadImageTensor'),
    dict(type='RandomResizedCropTensor', size=32, scale=(0.6, 1.0)),
    dict(type='RandomFlipTensor', prob=0.5),
    dict(type='PackClsInputs'),
]
test_pipeline = [
    dict(type='LoadImageTensor'),
    dict(type='ResizeEdgeTensor', scale=36, edge='short'),
    dict(type='CenterCropTensor', size=32),
    dict(type='PackClsInputs'),
]

train_dataloader = dict(
    batch_size=16,
    num_workers=2,
    persistent_workers=True,
    pin_memory=False,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        split='train',
        classes=synthetic_classes,
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=64,
    num_workers=2,
    persistent_workers=True,
    pin_memory=False,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        split='val',
        classes=synthetic_classes,
        pipeline=test_pipeline))
val_evaluator = [
    dict(type='Accuracy', topk=(1, 5)),
    dict(type='LayerwiseAccuracy'),
]

test_dataloader = val_dataloader
test_evaluator = val_evaluator
