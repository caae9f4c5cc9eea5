# AugLocal (Ma et al., ICLR 2024), Table 1: ResNet-110 on STL-10: SGD Nesterov
# 0.9, wd 1e-4, batch 128, lr 0.1, cosine, 400 epochs (AugLocal paper,
# training setups). Auxiliary depth d = 4, pyramidal depth with tau = 0.5 (the
# official run.sh and README), K = 55 local layers. As the official CIFAR
# script (our CIFAR reproduction setting, docs/algorithms.md): only the first
# K - d - 1 layers get an auxiliary network and heads of depth 1 put a
# BatchNorm1d before their classifier.
_base_ = [
    '../_base_/models/local_cifar_resnet110.py',
    '../_base_/datasets/stl10_bs128.py',
    # the official lr schedule, once per epoch (per iteration: *_smooth.py)
    '../_base_/schedules/stl10_bs128_sgd_cos_400e.py',
    '../_base_/small_image_runtime.py',
]

model = dict(
    image_size=96,  # STL-10: 96 x 96 crops
    aux_head=dict(
        type='AugLocalAuxHead',
        depth=4,
        pyramid=True,
        tau=0.5,
        bn1d_if_shallow=True),
    # the official CIFAR script: K' = K - d = 51 local modules, auxiliary
    # heads on layers 0..49, the last d + 1 = 5 blocks trained end to
    # end with the output layer
    split_points=[*range(50), 54])
