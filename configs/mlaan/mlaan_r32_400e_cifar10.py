# MLAAN (Zhang et al., "MLAAN: Scaling Supervised Local Learning with
# Multilaminar Leap Augmented Auxiliary Network", arXiv:2406.16633, 2024) on
# CIFAR-10 with ResNet-32, the setting of its official CIFAR code: K = 15
# local modules (one per residual block, the stem joining the first), a
# cascaded stream spanning 2 modules (so module 0 has no loss of its own),
# loss weights 0.001 (independent stream) / 0.999 (cascaded stream), the
# authors' ResNet-32 leap-layer table (leap_layers='auto'), the independent
# classifier AP + FC, EMA momentum 0.999 (their run32 script), leap blocks
# and EMA twins initialised like the backbone (no zero-initialised residual;
# that code deep-copies the initialised backbone blocks, we re-initialise
# them), the last module trained by the cascaded stream's cross-entropy alone
# (last_loss_weights=(0, 1), as that code back-propagates it) and the recipe
# of that code: SGD Nesterov 0.9, wd 1e-4, batch 1024, lr 0.8, cosine, 400
# epochs, the AugLocal CIFAR augmentation. Our corrections
# (docs/algorithms.md, MLAAN): every EMA twin is updated once per iteration,
# after the optimizer step (that code moves only the last twin, before the
# step).
_base_ = [
    '../_base_/models/local_cifar_resnet32.py',
    '../_base_/datasets/cifar10_bs1024.py',
    '../_base_/schedules/cifar_bs1024_sgd_cos_400e.py',
    '../_base_/small_image_runtime.py',
]

model = dict(
    type='MLAANImageClassifier',
    aux_head=dict(
        type='MLAANAuxHead',
        independent_head=dict(type='MLAANIndependentHead'),
        leap_layers='auto',
        ema_momentum=0.999,
        ema_buffers=False,
        zero_init_residual=False),  # the backbone's norm weights (all 1)
    split_points=None,  # K = 15: stem + layer1.0, then one block each
    span=2,
    loss_weights=(0.001, 0.999),
    # (0.001, 0.999) like the other modules would give layer3.3 0.999x the
    # cascade's gradient; layer3.4 and the classifier get the same either way
    last_loss_weights=(0., 1.))
