# STL-10 recipe of the AugLocal paper (Ma et al., ICLR 2024) and its
# official code: as cifar_bs1024_sgd_cos_400e.py (SGD, Nesterov 0.9, wd
# 1e-4, 400 epochs, the official per-epoch schedule: a 10-epoch warm-up
# blended from lr 0.01 into the cosine), but batch 128 with initial lr 0.1.
# stl10_bs128_sgd_cos_400e_smooth.py changes the rate every iteration.
_base_ = ['./cifar_bs1024_sgd_cos_400e.py']

lr = 0.1
max_epochs = 400
warmup_epochs = 10

optim_wrapper = dict(optimizer=dict(lr=lr))
param_scheduler = [
    dict(
        type='EpochCosineLR',
        T_max=max_epochs,
        first_epoch=1,
        warmup_epochs=warmup_epochs,
        start_factor=0.01 / lr,  # the warm-up starts at 0.01
        by_epoch=True,
        begin=0,
        end=max_epochs),
]
auto_scale_lr = dict(base_batch_size=128)
