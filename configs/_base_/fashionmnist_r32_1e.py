# The Fashion-MNIST recipe that every rule's *_r32_1e_fashionmnist.py
# shares (docs/benchmarks.md, "Fashion-MNIST: every rule on real data"):
# the CIFAR ResNet-32 on 28 x 28 grey images, the data and augmentation,
# one epoch over all 60,000 training images at batch 128, and the
# small-image runtime. A rule's config adds only its model settings.
_base_ = [
    './models/local_cifar_resnet32_grey28.py',
    './datasets/fashionmnist_bs128.py',
    './schedules/fashionmnist_bs128_sgd_cos_1e.py',
    './small_image_runtime.py',
]
