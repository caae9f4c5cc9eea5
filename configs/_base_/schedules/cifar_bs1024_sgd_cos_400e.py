# Small-image recipe of the AugLocal paper (Ma et al., ICLR 2024, training
# setups) and its official code: SGD, Nesterov momentum 0.9, weight decay
# 1e-4, batch 1024 with initial lr 0.8 (CIFAR-10, SVHN), cosine annealing,
# 400 epochs. The official code also warms up over the first 10 epochs,
# from lr 0.01 towards the cosine curve; here a linear warm-up from 0.01 to
# the initial lr over 10 epochs, then cosine annealing over the other 390
# (iteration-based, so lr changes smoothly inside an epoch).
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

train_cfg = dict(
    type='ResumableEpochBasedTrainLoop', max_epochs=max_epochs,
    val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

# `tools/train.py --auto-scale-lr` scales lr linearly to the actual batch
auto_scale_lr = dict(enable=False, base_batch_size=1024)
