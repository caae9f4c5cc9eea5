# STL-10 recipe of the AugLocal paper (Ma et al., ICLR 2024) and its
# official code: as cifar_bs1024_sgd_cos_400e.py (SGD, Nesterov 0.9, wd
# 1e-4, 10-epoch warm-up from lr 0.01, cosine, 400 epochs), but batch 128
# with initial lr 0.1.
_base_ = ['./cifar_bs1024_sgd_cos_400e.py']

lr = 0.1
max_epochs = 400
warmup_epochs = 10

optim_wrapper = dict(optimizer=dict(lr=lr))
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
auto_scale_lr = dict(base_batch_size=128)
