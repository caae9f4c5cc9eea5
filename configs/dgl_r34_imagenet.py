# DGL (Belilovsky et al., ICML 2020) ResNet-34 on ImageNet-1k, as the
# AugLocal paper compared it: K = 17 one-layer local modules, each with
# DGL's MLP-SR auxiliary network in the AugLocal-repository variant (3 x
# 1x1 conv, 2 hidden FC without bias); the training recipe of
# auglocal_r34_imagenet.py.
_base_ = ['./auglocal_r34_imagenet.py']

model = dict(
    # the plain network: the memory options of auglocal_r34_imagenet.py
    # were measured for AugLocal's heads only
    backbone=dict(stem_chunk_size=None, with_cp=False),
    aux_head=dict(
        _delete_=True,
        type='DGLAuxHead',
        num_convs=3,
        num_hidden_fc=2,
        hidden_fc_bias=False))
