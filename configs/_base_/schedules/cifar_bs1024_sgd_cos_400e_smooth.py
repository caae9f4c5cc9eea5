# The small-image recipe of cifar_bs1024_sgd_cos_400e.py (SGD, Nesterov 0.9,
# wd 1e-4, batch 1024, lr 0.8, 400 epochs) with a smoother learning-rate
# schedule that changes every iteration: a linear warm-up from 0.01 to lr
# over 10 epochs, then cosine annealing from lr to 0 over the other 390.
# Against the official per-epoch schedule of the base file: the rate rises
# inside each epoch (0.0875 instead of 0.01 at the end of epoch 1), reaches
# lr 0.8 instead of 0.72 in epoch 10, its cosine spans the last 390 epochs
# instead of all 400, and it only approaches 0 in the last epoch
# (docs/algorithms.md, "Recipe").
_base_ = ['./cifar_bs1024_sgd_cos_400e.py']

lr = 0.8
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
