# AugLocal ResNet-34 on ImageNet-1k, the network and recipe of
# auglocal_r34_imagenet.py with every exact memory option on: the same
# updates and BN statistics, at a smaller peak memory per GPU
# (docs/benchmarks.md, "AugLocal d = 4 against BP: memory") and more
# recomputation.
# On top of auglocal_r34_imagenet.py's lean stem and per-layer optimizer
# step:
# - nested checkpointing in every backbone block (with_cp='nested',
#   cp_stages=None): the first convolution stage of a block is recomputed
#   once more in its backward;
# - checkpointing of the first (highest-resolution) block of every
#   auxiliary network (cp_max_downsample=None).
# Together these cost 19% more FLOPs per training step than the plain
# network (8.9 of 45.4 GMACs per image at 224 x 224).
#   bash tools/dist_train.sh configs/auglocal_r34_lowmem_imagenet.py 8
# On one GPU with batch 128, scale the learning rate (tools/train.py
# --auto-scale-lr): the recipe's batch is 1024 over 8 GPUs.
#   python tools/train.py configs/auglocal_r34_lowmem_imagenet.py
_base_ = ['./auglocal_r34_imagenet.py']

model = dict(
    backbone=dict(with_cp='nested', cp_stages=None),
    aux_head=dict(with_cp=1, cp_max_downsample=None))
