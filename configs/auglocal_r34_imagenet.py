# AugLocal ResNet-34 on ImageNet-1k (Ma et al., "Scaling Supervised Local
# Learning with Augmented Auxiliary Networks", ICLR 2024).
# From the paper: K = 17 local modules (one per local layer), auxiliary
# depth d = 4 without the pyramid, SGD Nesterov momentum 0.9, wd 1e-4,
# batch 1024 (128 x 8 GPUs), lr 0.4, cosine annealing, 200 epochs,
# RandomResizedCrop 224 + flip / Resize 256 + CenterCrop 224.
#   python tools/train.py configs/auglocal_r34_imagenet.py
#   bash tools/dist_train.sh configs/auglocal_r34_imagenet.py 8
_base_ = [
    './_base_/models/local_resnet34.py',
    './_base_/datasets/imagenet_bs128.py',
    # the official lr schedule, once per epoch (per iteration: *_smooth.py)
    './_base_/schedules/imagenet_bs1024_sgd_cos_200e.py',
    './_base_/default_runtime.py',
]

# d = 4 (paper); tau is used only when pyramid=True
model = dict(
    # Memory options, all exact (the same updates and BN statistics;
    # docs/benchmarks.md, "AugLocal d = 4 against BP: memory"), together
    # 0.50x BP's peak at batch 128 in one process (live tensors) for +5.6%
    # of the FLOPs of a training step:
    # - the stem in chunks of 16 images (LeanStem): removes the largest
    #   tensors of local module 0; costs three recomputations of the stem
    #   convolution (+0.8%);
    # - gradient checkpointing in the blocks of layer1 (56 x 56): their
    #   activations are recomputed after the auxiliary head's backward
    #   instead of being held through it (+1.5%);
    # - gradient checkpointing in the first block of the auxiliary networks
    #   of the modules at 56 x 56 and 28 x 28 (downsampled at most 8x), the
    #   largest tensors of those heads (+3.3%).
    # Checkpointing every backbone block (cp_stages=None, +7.8%) or every
    # head's first block (cp_max_downsample=None, +7.3%) saves nothing more
    # at this size.
    # The process's peak resident set on a CPU stays at 0.60x BP's: the
    # heads' parameters and momentum (1178 MiB) are resident throughout.
    # For training on CPUs, auglocal_r34_fileoffload_imagenet.py rests them
    # in memory-mapped files between uses (model.aux_head_offload=
    # dict(host='file')): 0.38x, the same updates, no time measurable at
    # batch 16 (0.99x); it is refused on GPUs, where
    # auglocal_r34_offload_imagenet.py is the counterpart.
    # zero_init_residual=False: every block's last BatchNorm starts at
    # weight 1, as in the official ImageNet code (mmdet's default, True,
    # starts it at 0; docs/algorithms.md, "Recipe").
    backbone=dict(
        stem_chunk_size=16,
        with_cp=True,
        cp_stages=(0, ),
        zero_init_residual=False),
    aux_head=dict(
        type='AugLocalAuxHead',
        depth=4,
        pyramid=False,
        tau=0.5,
        with_cp=1,
        cp_max_downsample=8))

# The per-layer optimizer step, exact as well: each local module is updated
# as soon as its gradients are final (under several GPUs, when their
# all-reduce has finished) and its gradients are freed, so the gradients of
# at most a few modules are alive instead of all of them.
optim_wrapper = dict(type='LayerwiseLocalOptimWrapper')

# local learning under several GPUs: one all-reduce per parameter per
# iteration, started as each local module finishes its backward
model_wrapper_cfg = dict(type='LocalDistributedDataParallel')

custom_hooks = [
    # <work_dir>/export/{backbone.pth,torchvision.pth,backbone.json}
    dict(type='ExportBackboneHook'),
    # <work_dir>/layerwise_accuracy.png: val top-1 vs. local module
    dict(type='LayerwiseAccuracyPlotHook'),
]
