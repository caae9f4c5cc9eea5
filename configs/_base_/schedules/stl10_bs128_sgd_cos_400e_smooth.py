# The STL-10 recipe of stl10_bs128_sgd_cos_400e.py (batch 128, lr 0.1) with
# the smoother schedule of cifar_bs1024_sgd_cos_400e_smooth.py: a linear
# warm-up from 0.01 to lr over 10 epochs, then cosine annealing to 0 over
# the other 390, the rate changing every iteration (docs/algorithms.md,
# "Recipe").
_base_ = ['./stl10_bs128_sgd_cos_400e.py']

lr = 0.1
max_epochs = 400
warmup_epochs = 10

param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=0.01 / lr,
        by_epoch=True,
        begin=0,
        end=warmup_epochs,
        convert_to_iter_based=True),
    dict(
        type='CosineAnnealingLR',
        T_max=max_epochs - warmup_epochs,
        eta_min=0.,
        by_epoch=True,
        begin=warmup_epochs,
        end=max_epochs,
        convert_to_iter_based=True),
]
