# MLAAN (Zhang et al., arXiv:2406.16633, 2024) on Fashion-MNIST: ResNet-32 on
# 28 x 28 grey images, the recipe of the Fashion-MNIST table in
# docs/benchmarks.md (_base_/fashionmnist_r32_1e.py, the same for every rule).
# The rule as in mlaan_r32_400e_cifar10.py: K = 15 local modules, a cascaded
# stream spanning 2 modules, the authors' ResNet-32 leap layers, EMA momentum
# 0.999, leap blocks initialised like the backbone, only the cascaded loss in
# the last module.
_base_ = ['../_base_/fashionmnist_r32_1e.py']

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
