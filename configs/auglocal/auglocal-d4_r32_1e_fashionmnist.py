# AugLocal d = 4 (Ma et al., ICLR 2024), on Fashion-MNIST: ResNet-32 on 28 x 28
# grey images, the recipe of the Fashion-MNIST table in docs/benchmarks.md
# (_base_/fashionmnist_r32_1e.py, the same for every rule). The rule as in
# auglocal-d4_r32_400e_cifar10.py: pyramidal depth with tau = 0.5, the official
# CIFAR setting (K' = 12 local modules, the last d + 1 = 5 blocks trained end
# to end with the output layer).
_base_ = ['../_base_/fashionmnist_r32_1e.py']

model = dict(
    aux_head=dict(
        type='AugLocalAuxHead',
        depth=4,
        pyramid=True,
        tau=0.5,
        bn1d_if_shallow=True),
    split_points=[*range(11), 15])
