# Small-image recipe of the AugLocal paper (Ma et al., ICLR 2024, training
# setups) and its official code (train.py; the InfoPro and MLAAN scripts use
# the same schedule): SGD, Nesterov momentum 0.9, weight decay 1e-4, batch
# 1024 with initial lr 0.8 (CIFAR-10, SVHN), 400 epochs.
# The official learning-rate schedule, set once at the start of each epoch
# (EpochCosineLR): in epoch n = 1 .. 400 the cosine 0.5 * lr * (1 + cos(pi *
# n / 400)), blended over the first 10 epochs with the start rate 0.01
# (weights (n - 1) / 10 and (11 - n) / 10): 0.01 in epoch 1, 0.72 in epoch
# 10, exactly 0 in epoch 400. cifar_bs1024_sgd_cos_400e_smooth.py changes
# the rate every iteration instead (docs/algorithms.md, "Recipe").
# LocalOptimWrapper: one backward per local module, one step per iteration
# (a plain backward and step for rule='bp').
lr = 0.8
max_epochs = 400
warmup_epochs = 10

optim_wrapper = dict(
    type='LocalOptimWrapper',
    optimizer=dict(
        type='SGD', lr=lr, momentum=0.9, nesterov=True, weight_decay=1e-4))

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

train_cfg = dict(
    type='ResumableEpochBasedTrainLoop', max_epochs=max_epochs,
    val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

# `tools/train.py --auto-scale-lr` scales lr linearly to the actual batch
# (the whole schedule, the warm-up's start rate included)
auto_scale_lr = dict(enable=False, base_batch_size=1024)
