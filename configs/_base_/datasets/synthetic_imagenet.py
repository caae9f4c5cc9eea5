# The synthetic shapes data set in the ImageNet folder layout (8 classes,
# 36 x 36 JPEGs), made by tools/demo.py or by
#   python tools/misc/make_synthetic_data.py imagenet data/synthetic_imagenet
# (both read `synthetic_data` below). Inherits imagenet_bs128.py: same
# dataset class, samplers, collate and metrics; what changes is the size:
# crops scaled to the small images (RandomResizedCrop 32; resize 36 +
# centre crop 32, about ImageNet's 224/256 ratio), CPU-sized batches and
# workers, and the class list given instead of 1000 classes.
_base_ = './imagenet_bs128.py'

data_root = 'data/synthetic_imagenet/'
synthetic_classes = ('checker', 'circle', 'cross', 'ring', 'square', 'star',
                     'stripes', 'triangle')
# arguments of auglocal_det.testing.generate_imagenet_shapes
synthetic_data = dict(
    num_train_per_class=400,
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

# what differs from the ImageNet loaders (the rest is inherited)
train_dataloader = dict(
    batch_size=16,
    num_workers=2,
    pin_memory=False,
    dataset=dict(
        data_root=data_root,
        classes=synthetic_classes,
        num_classes=None,
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=64,
    num_workers=2,
    pin_memory=False,
    dataset=dict(
        data_root=data_root,
        classes=synthetic_classes,
        num_classes=None,
        pipeline=test_pipeline))
test_dataloader = val_dataloader
