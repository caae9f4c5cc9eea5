# DGL (Belilovsky et al., ICML 2020) VGG-13 on ImageNet-1k, as the AugLocal
# paper compared it: K = 10 one-layer local modules, each with DGL's MLP-SR
# auxiliary network in the AugLocal-repository variant (3 x 1x1 conv, 2
# hidden FC without bias; pool sizes from the real feature size), the
# recipe of auglocal-d4_vgg13_200e_imagenet.py.
_base_ = ['../auglocal/auglocal-d4_vgg13_200e_imagenet.py']

model = dict(
    aux_head=dict(
        _delete_=True,
        type='DGLAuxHead',
        num_convs=3,
        num_hidden_fc=2,
        hidden_fc_bias=False,
        # PyTorch's default initialisation (no init_cfg), as the official
        # VGG code leaves its auxiliary networks (built after its
        # initialisation loop)
        init_cfg=[]))
