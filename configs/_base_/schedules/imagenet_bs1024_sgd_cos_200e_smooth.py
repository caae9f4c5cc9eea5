# The ImageNet recipe of imagenet_bs1024_sgd_cos_200e.py (SGD, Nesterov 0.9,
# wd 1e-4, batch 1024, lr 0.4, 200 epochs) with cosine annealing that
# changes the rate every iteration instead of once per epoch. Against the
# official per-epoch schedule of the base file, the rate inside epoch e
# falls from the official value of epoch e to that of epoch e + 1, and it
# reaches 0 at the end of the last epoch instead of training that epoch at
# 0.5 * lr * (1 + cos(pi * 199 / 200)) (docs/algorithms.md, "Recipe").
_base_ = ['./imagenet_bs1024_sgd_cos_200e.py']

param_scheduler = [
    dict(
        type='CosineAnnealingLR',
        T_max=200,
        eta_min=0.,
        by_epoch=True,
        begin=0,
        end=200,
        convert_to_iter_based=True)
]
