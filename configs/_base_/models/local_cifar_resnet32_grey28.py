# The CIFAR ResNet-32 of local_cifar_resnet32.py on 28 x 28 grey images
# (MNIST, Fashion-MNIST): one input channel, image_size 28 (the auxiliary
# heads size their layers from it). Everything else as on CIFAR-10.
_base_ = ['./local_cifar_resnet32.py']

model = dict(backbone=dict(in_channels=1), image_size=28)
