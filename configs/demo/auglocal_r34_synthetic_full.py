# The full demo's AugLocal ResNet-34 (tools/demo.py --full) on the synthetic
# shapes data set (8 classes, 36 px JPEGs in the ImageNet folder layout),
# for a CPU in a quarter of an hour; the one-command demo
# (auglocal_r34_synthetic.py) shortens it.
# Same machinery as auglocal_r34_imagenet.py (dataset class, transforms,
# LocalImageClassifier + LocalResNet-34, AugLocal heads with d = 4 and
# K = 17 from the paper, LocalOptimWrapper, warm-up and
# cosine schedule, export and layer-wise plot hooks); the demo choices are:
# - sizes: 8 classes, 32 px crops, batch 16, 8 epochs, and auxiliary
#   networks at a quarter of the paper's width (widen_factor=0.25: 11M
#   instead of 146M auxiliary parameters, whose cost would dominate on a
#   CPU at any input size);
# - the optimizer: AdamW (lr 1e-3, weight decay 0.05) instead of the
#   paper's SGD: from scratch on 1,600 small images SGD needs far more
#   epochs than a CPU demo affords (both measured in docs/benchmarks.md).
#   python tools/demo.py --full --stages pretrain   (generates the data,
#                                                    trains, exports)
_base_ = [
    '../_base_/models/local_resnet34.py',
    '../_base_/datasets/synthetic_imagenet.py',
    '../_base_/schedules/imagenet_bs1024_sgd_cos_200e.py',
    '../_base_/default_runtime.py',
]

# the data set as first written for the demo: 200 train / 50 val images per
# class, in its own folder
synthetic_data = dict(num_train_per_class=200, num_val_per_class=50)
data_root = 'data/synthetic_imagenet_full/'
train_dataloader = dict(batch_size=16, dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader

max_epochs = 8
model = dict(
    num_classes=8,
    image_size=32,  # the training crop of synthetic_imagenet.py
    aux_head=dict(
        type='AugLocalAuxHead', depth=4, pyramid=False, widen_factor=0.25))

optim_wrapper = dict(
    optimizer=dict(
        _delete_=True, type='AdamW', lr=1e-3, weight_decay=0.05))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0,
         end=50),
    dict(
        type='CosineAnnealingLR',
        T_max=max_epochs,
        eta_min=0.,
        by_epoch=True,
        begin=0,
        end=max_epochs,
        convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=1)
auto_scale_lr = dict(enable=False, base_batch_size=16)

default_hooks = dict(
    logger=dict(interval=10),
    # the weights only (no optimizer state): the AugLocal heads make a full
    # checkpoint 1.3 GB
    checkpoint=dict(
        interval=max_epochs, max_keep_ckpts=1, save_optimizer=False))
log_processor = dict(window_size=10)
randomness = dict(seed=0)

model_wrapper_cfg = dict(type='LocalDistributedDataParallel')
custom_hooks = [
    dict(type='ExportBackboneHook'),
    dict(type='LayerwiseAccuracyPlotHook'),
    # process memory of the third iteration (training_memory.json)
    dict(type='TrainingMemoryHook', measure_iter=2),
]
