# MLAAN ResNet-34 on ImageNet-1k (Zhang et al., "MLAAN: Scaling Supervised
# Local Learning with Multilaminar Leap Augmented Auxiliary Network",
# arXiv:2406.16633, 2024).
#
# From the MLAAN paper and its official ImageNet code: K = 16 local modules,
# one per residual block (the stem joins the first; split_points=None), a
# cascaded stream spanning 3 modules (so modules 0 and 1 have no loss of
# their own and learn through the cascades of modules 2 and 3), loss weights
# 0.001 (independent stream) / 0.999 (cascaded stream), the independent
# classifier by width (MLAANIndependentHead), the leap-layer table of the
# authors' code (leap_layers='auto') and EMA momentum 0.995.
# Our corrections (docs/algorithms.md, MLAAN): every EMA twin is updated
# exactly once per iteration, after the optimizer step (the official code
# moves the twins of modules 2 .. 14 during the forward, before the step,
# and that of module 14 twice); the loss weights are read from here; no leap
# module is built for the modules without a loss.
# Everything else is the recipe of auglocal_r34_imagenet.py, for a
# like-for-like comparison: SGD Nesterov 0.9, wd 1e-4, batch 1024 (128 x 8
# GPUs), lr 0.4, cosine over 200 epochs, RandomResizedCrop 224 + flip; the
# GPUs train one model (its gradients are averaged over them).
# The authors' run: 150 epochs, lr 0.05, two processes of batch 128, one per
# GPU. The DistributedDataParallel wrapping of their imagenet_DDP.py is
# commented out, so that "2-GPU" run trains two unsynchronised models, each
# on its half of the data at batch 128, not one model at batch 256.
#   bash tools/dist_train.sh configs/mlaan_r34_imagenet.py 8
_base_ = ['./auglocal_r34_imagenet.py']

model = dict(
    # the plain network: the memory options of auglocal_r34_imagenet.py
    # were measured for AugLocal's heads only; every block's last BatchNorm
    # starts at weight 0, as in MLAAN's official ImageNet code
    backbone=dict(
        stem_chunk_size=None, with_cp=False, zero_init_residual=True),
    type='MLAANImageClassifier',
    aux_head=dict(
        _delete_=True,
        type='MLAANAuxHead',
        # the independent stream's head ("net_classifier")
        independent_head=dict(type='MLAANIndependentHead'),
        leap_layers='auto',  # the authors' aux_config table
        ema_momentum=0.995,
        ema_buffers=False),  # True: also average BN running statistics
    split_points=None,  # K = 16: stem + layer1.0, then one block each
    span=3,
    loss_weights=(0.001, 0.999))
