# AugLocal ResNet-101 on ImageNet-1k (Ma et al., ICLR 2024): K = 34 local
# modules (the stem and the 33 Bottlenecks), auxiliary depth d = 4 without
# the pyramid; the training recipe of auglocal_r34_imagenet.py (SGD
# Nesterov 0.9, wd 1e-4, batch 1024 = 128 x 8 GPUs, lr 0.4, cosine, 200
# epochs).
_base_ = ['./auglocal_r34_imagenet.py']

model = dict(backbone=dict(depth=101))
