# Fashion-MNIST (Xiao, Rasul and Vollgraf, 2017): the four official IDX
# files, compressed or extracted, in data_root (on Debian, `apt-get install
# dataset-fashion-mnist` puts them in /usr/share/datasets/fashion-mnist/).
# Batch 128; loaders, sampler and evaluators as in cifar10_bs1024.py.
# The images stay 28 x 28 and grey: the CIFAR ResNets are fully
# convolutional with global pooling (28 -> 14 -> 7 through the three
# stages), so padding to 32 x 32 would add 31 % of computation on blank
# pixels, and copying the grey plane into three channels would feed the
# stem the same values three times; the models take one input channel
# (_base_/models/local_cifar_resnet32_grey28.py). Augmentation as in the
# AugLocal paper's small-image recipe (Ma et al., ICLR 2024): zero-padding
# by 2 pixels (the SVHN amount; the images' background is black), random
# 28 x 28 crop, horizontal flip (clothes are left-right symmetric, unlike
# digits); test images unchanged. Normalisation with the training set's
# mean and standard deviation (72.94 and 90.02 on the 0..255 scale, all
# 60,000 images).
#
# Training on all 60,000 images; train_dataloader.dataset.num_per_class=N
# keeps the first N images of every class in the official file's order (a
# fixed, class-balanced subset).
_base_ = ['./cifar10_bs1024.py']

dataset_type = 'FashionMNIST'
data_root = '/usr/share/datasets/fashion-mnist/'

data_preprocessor = dict(mean=[72.94], std=[90.02])

train_pipeline = [
    dict(type='RandomCropTensor', size=28, padding=2),
    dict(type='RandomFlipTensor', prob=0.5),
    dict(type='PackClsInputs'),
]

train_dataloader = dict(
    batch_size=128,
    num_workers=1,
    dataset=dict(
        type=dataset_type, data_root=data_root, pipeline=train_pipeline))
# all 10,000 test images
val_dataloader = dict(
    batch_size=500,
    num_workers=1,
    dataset=dict(type=dataset_type, data_root=data_root))
test_dataloader = val_dataloader
