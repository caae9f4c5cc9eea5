# MLAAN on CIFAR-10 / ResNet-32 (mlaan_r32_400e_cifar10.py) with DGL's
# auxiliary network (the AugLocal-paper variant) as the independent stream's
# head, as the MLAAN paper combines it with DGL.
_base_ = ['./mlaan_r32_400e_cifar10.py']

model = dict(
    aux_head=dict(
        independent_head=dict(
            _delete_=True,
            type='DGLAuxHead',
            num_convs=3,
            num_hidden_fc=2,
            hidden_fc_bias=False)))
