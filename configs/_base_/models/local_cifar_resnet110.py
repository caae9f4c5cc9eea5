# LocalImageClassifier on the CIFAR ResNet-110 of the local-learning papers
# (stem 16C3 + 3 x 18 BasicBlocks of widths 16/32/64): K = 55 local layers.
# See local_cifar_resnet32.py.
_base_ = ['./local_cifar_resnet32.py']

model = dict(backbone=dict(depth=110))
