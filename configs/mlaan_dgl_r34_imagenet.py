# MLAAN combined with DGL: the MLAAN ResNet-34 of mlaan_r34_imagenet.py with
# DGL's MLP-SR auxiliary network (the AugLocal-repository variant of
# dgl_r34_imagenet.py) as the head of the independent stream. Its
# cross-entropy is weighted by w_x = 0.001; the cascaded stream with the
# leap augmented modules is unchanged. Training recipe of
# auglocal_r34_imagenet.py.
_base_ = ['./mlaan_r34_imagenet.py']

model = dict(
    aux_head=dict(
        independent_head=dict(
            _delete_=True,
            type='DGLAuxHead',
            num_convs=3,
            num_hidden_fc=2,
            hidden_fc_bias=False)))
