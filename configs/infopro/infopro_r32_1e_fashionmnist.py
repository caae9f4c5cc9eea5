# InfoPro (Wang et al., ICLR 2021) on Fashion-MNIST: ResNet-32 on 28 x 28 grey
# images, the recipe of the Fashion-MNIST table in docs/benchmarks.md
# (_base_/fashionmnist_r32_1e.py, the same for every rule). The rule as in
# infopro_r32_400e_cifar10.py: K = 16 local modules, cross-entropy plus the
# reconstruction of the (one-channel) input image, loss weights of ResNet-32.
_base_ = ['../_base_/fashionmnist_r32_1e.py']

model = dict(
    aux_head=dict(
        type='InfoProAuxHead',
        loss_mode='ce',
        arch='cifar',
        lambda_x=(5.0, 0.2),
        lambda_y=(0.05, 0.5)))
