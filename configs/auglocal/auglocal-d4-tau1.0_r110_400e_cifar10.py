# AugLocal (Ma et al., ICLR 2024), Tables 2 and 6 (pyramidal depth):
# ResNet-110 on CIFAR-10: SGD Nesterov 0.9, wd 1e-4, batch 1024, lr 0.8,
# cosine, 400 epochs (AugLocal paper, training setups). Auxiliary depth d = 4,
# pyramidal depth with tau = 1.0, K = 55 local layers. As the official CIFAR
# script (our CIFAR reproduction setting, docs/algorithms.md): only the first
# K - d - 1 layers get an auxiliary network and heads of depth 1 put a
# BatchNorm1d before their classifier.
_base_ = [
    '../_base_/models/local_cifar_resnet110.py',
    '../_base_/datasets/cifar10_bs1024.py',
    # the official lr schedule, once per epoch (per iteration: *_smooth.py)
    '../_base_/schedules/cifar_bs1024_sgd_cos_400e.py',
    '../_base_/small_image_runtime.py',
]

model = dict(
    aux_head=dict(
        type='AugLocalAuxHead',
        depth=4,
        pyramid=True,
        tau=1.0,
        bn1d_if_shallow=True),
    # the official CIFAR script: K' = K - d = 51 local modules, auxiliary
    # heads on layers 0..49, the last d + 1 = 5 blocks trained end to
    # end with the output layer
    split_points=[*range(50), 54])
