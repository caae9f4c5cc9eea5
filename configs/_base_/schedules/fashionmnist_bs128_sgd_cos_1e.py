# The Fashion-MNIST schedule of docs/benchmarks.md, one for every rule and
# sized for a 2-core CPU: one epoch over all 60,000 training images (469
# iterations at batch 128). SGD with Nesterov momentum 0.9 and weight decay
# 1e-4 as in the AugLocal paper's small-image recipe (Ma et al., ICLR 2024,
# appendix A.2), its learning rate scaled linearly to batch 128 (0.8 at 1024
# -> 0.1, the paper's STL-10 pair), cosine annealing to 0 over the run,
# changed every iteration (a rate set once per epoch, as the paper's
# 400-epoch recipe does, would stay flat for the whole run), no warm-up.
# Validation on the 10,000 test images at the end. Seed 0.
lr = 0.1
max_epochs = 1

optim_wrapper = dict(
    type='LocalOptimWrapper',
    optimizer=dict(
        type='SGD', lr=lr, momentum=0.9, nesterov=True, weight_decay=1e-4))

param_scheduler = [
    dict(
        type='CosineAnnealingLR',
        T_max=max_epochs,
        eta_min=0.,
        by_epoch=True,
        begin=0,
        end=max_epochs,
        convert_to_iter_based=True),
]

train_cfg = dict(
    type='ResumableEpochBasedTrainLoop', max_epochs=max_epochs,
    val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

randomness = dict(seed=0)

# `tools/train.py --auto-scale-lr` scales lr linearly to the actual batch
auto_scale_lr = dict(enable=False, base_batch_size=128)
