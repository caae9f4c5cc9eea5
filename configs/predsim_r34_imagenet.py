# PredSim (Nokland & Eidnes, ICML 2019) ResNet-34 on ImageNet-1k in the
# AugLocal-repository per-block variant: K = 17 one-layer local modules,
# loss 0.99 * similarity-matching + 0.01 * prediction (beta = 0.99),
# prediction features pooled to about 512. Training recipe of
# auglocal_r34_imagenet.py.
_base_ = ['./auglocal_r34_imagenet.py']

model = dict(
    # the plain network: the memory options of auglocal_r34_imagenet.py
    # were measured for AugLocal's heads only
    backbone=dict(stem_chunk_size=None, with_cp=False),
    aux_head=dict(
        _delete_=True,
        type='PredSimAuxHead',
        hidden_dim=512,
        lambda_x=0.99,
        lambda_y=0.01))
