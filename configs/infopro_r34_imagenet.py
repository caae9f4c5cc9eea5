# InfoPro (Wang et al., ICLR 2021) ResNet-34 on ImageNet-1k with K = 17
# one-layer local modules, as re-implemented for the AugLocal paper's
# comparison: classification head with cross-entropy plus the
# reconstruction decoder (BCE against the un-normalised image). There is no
# published lambda setting for ResNet-34 with K = 17: the loss weights are
# InfoProAuxHead's defaults, which interpolate from (lambda_x, lambda_y) =
# (5, 0) at the first module to (0.5, 1) at the last auxiliary head (the
# ResNet-110 K=55 values; our choice). Training recipe of
# auglocal_r34_imagenet.py.
_base_ = ['./auglocal_r34_imagenet.py']

model = dict(
    # the plain network: the memory options of auglocal_r34_imagenet.py
    # were measured for AugLocal's heads only
    backbone=dict(stem_chunk_size=None, with_cp=False),
    aux_head=dict(
        _delete_=True,
        type='InfoProAuxHead',
        loss_mode='ce',
        arch='imagenet'))
