# Paper recipe (AugLocal, Ma et al., ICLR 2024, ImageNet) and its official
# code (exp_imagenet/imagenet_DDP.py; MLAAN's ImageNet script uses the same
# schedule): SGD with Nesterov momentum 0.9, weight decay 1e-4, total batch
# 1024 (128 per GPU x 8), lr 0.4, 200 epochs, no warm-up.
# The official learning-rate schedule, set once at the start of each epoch
# (EpochCosineLR): 0.5 * lr * (1 + cos(pi * e / 200)) in epoch e = 0 .. 199.
# imagenet_bs1024_sgd_cos_200e_smooth.py changes the rate every iteration
# instead (docs/algorithms.md, "Recipe").
# LocalOptimWrapper: K backward passes (one per local module), one
# optimizer step and one zero_grad per iteration.
optim_wrapper = dict(
    type='LocalOptimWrapper',
    optimizer=dict(
        type='SGD', lr=0.4, momentum=0.9, nesterov=True, weight_decay=1e-4))

param_scheduler = [
    dict(
        type='EpochCosineLR',
        T_max=200,
        first_epoch=0,
        by_epoch=True,
        begin=0,
        end=200)
]

# EpochBasedTrainLoop that resumes a mid-epoch checkpoint exactly
train_cfg = dict(
    type='ResumableEpochBasedTrainLoop', max_epochs=200, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

# lr 0.4 is for a total batch of 1024; `tools/train.py --auto-scale-lr`
# scales it (the whole schedule) linearly to the actual total batch.
auto_scale_lr = dict(enable=False, base_batch_size=1024)
