# MLAAN on CIFAR-10 / ResNet-32 (mlaan_r32_400e_cifar10.py) with InfoPro's
# auxiliary networks (classifier + reconstruction decoder) as the independent
# stream's head, as the MLAAN paper combines it with InfoPro; InfoPro's
# ResNet-32 K = 16 loss weights (our choice).
_base_ = ['./mlaan_r32_400e_cifar10.py']

model = dict(
    aux_head=dict(
        independent_head=dict(
            _delete_=True,
            type='InfoProAuxHead',
            loss_mode='ce',
            arch='cifar',
            lambda_x=(5.0, 0.2),
            lambda_y=(0.05, 0.5))))
