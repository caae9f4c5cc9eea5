# MLAAN combined with InfoPro: the MLAAN ResNet-34 of mlaan_r34_imagenet.py
# with InfoPro's classification head and reconstruction decoder (as in
# infopro_r34_imagenet.py, the head's default lambdas interpolated over the
# module positions)
# as the independent stream's head. Its weighted loss is scaled by
# w_x = 0.001; the cascaded stream with the leap augmented modules is
# unchanged. Training recipe of auglocal_r34_imagenet.py.
_base_ = ['./mlaan_r34_imagenet.py']

model = dict(
    aux_head=dict(
        independent_head=dict(
            _delete_=True,
            type='InfoProAuxHead',
            loss_mode='ce',
            arch='imagenet')))
