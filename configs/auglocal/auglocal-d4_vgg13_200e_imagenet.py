# AugLocal VGG-13 on ImageNet-1k (Ma et al., ICLR 2024, ImageNet table): K =
# 10 one-layer local modules, auxiliary depth d = 4, the auxiliary
# classifier with hidden width 512 (see _base_/models/local_vgg13.py), the
# ImageNet recipe of auglocal_r34_imagenet.py (SGD Nesterov 0.9, wd 1e-4,
# batch 1024, lr 0.4, cosine, 200 epochs).
#   bash tools/dist_train.sh \
#       configs/auglocal/auglocal-d4_vgg13_200e_imagenet.py 8
_base_ = [
    '../_base_/models/local_vgg13.py',
    '../_base_/datasets/imagenet_bs128.py',
    # the official lr schedule, once per epoch (per iteration: *_smooth.py)
    '../_base_/schedules/imagenet_bs1024_sgd_cos_200e.py',
    '../_base_/default_runtime.py',
]

# local learning under several GPUs: one all-reduce per parameter per
# iteration, started as each local module finishes its backward
model_wrapper_cfg = dict(type='LocalDistributedDataParallel')

custom_hooks = [
    # <work_dir>/layerwise_accuracy.png: val top-1 vs. local module
    dict(type='LayerwiseAccuracyPlotHook'),
]
