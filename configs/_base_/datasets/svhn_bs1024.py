# SVHN cropped digits (data/svhn/{train,test}_32x32.mat; the "extra" split
# is not used), batch 1024 on one GPU, as the AugLocal paper (Ma et al.,
# ICLR 2024) and its official code (train.py): training images zero-padded
# by 2 pixels and randomly cropped to 32 x 32, no flip (digits);
# normalisation to [-1, 1] (mean = std = 127.5).
_base_ = ['./cifar10_bs1024.py']

dataset_type = 'SVHN'
data_root = 'data/svhn/'

data_preprocessor = dict(mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5])

train_pipeline = [
    dict(type='RandomCropTensor', size=32, padding=2),
    dict(type='PackClsInputs'),
]

train_dataloader = dict(
    dataset=dict(
        type=dataset_type, data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(type=dataset_type, data_root=data_root))
test_dataloader = val_dataloader
