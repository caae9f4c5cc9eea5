# STL-10, the labelled splits of the binary version
# (data/stl10/stl10_binary/{train,test}_{X,y}.bin: 5,000 training and
# 8,000 test images of 96 x 96), batch 128 on one GPU, as the AugLocal
# paper (Ma et al., ICLR 2024) and its official code (train.py): training
# images zero-padded by 4 pixels, random 96 x 96 crop, horizontal flip;
# normalisation to [-1, 1] (mean = std = 127.5). Models on these images
# need image_size=96.
_base_ = ['./cifar10_bs1024.py']

dataset_type = 'STL10'
data_root = 'data/stl10/'

data_preprocessor = dict(mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5])

train_pipeline = [
    dict(type='RandomCropTensor', size=96, padding=4),
    dict(type='RandomFlipTensor', prob=0.5),
    dict(type='PackClsInputs'),
]

train_dataloader = dict(
    batch_size=128,
    dataset=dict(
        type=dataset_type, data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=128, dataset=dict(type=dataset_type, data_root=data_root))
test_dataloader = val_dataloader
