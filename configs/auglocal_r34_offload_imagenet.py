# AugLocal ResNet-34 on ImageNet-1k, the network and recipe of
# auglocal_r34_imagenet.py with the auxiliary heads resting in host memory
# between their uses: the same updates and BN statistics, with most of the
# 154.4 M auxiliary parameters and their momentum off the GPU.
# Each head is brought to the GPU just before its module's loss (the next
# one on a side stream, while the current module computes) and goes back
# right after the per-layer optimizer step of its module
# (LayerwiseLocalOptimWrapper, which this option needs). Only the heads of
# the module being trained and of the next one are on the GPU.
# Measured (docs/benchmarks.md, "Auxiliary heads in host memory"): the live
# tensors of the compute device at batch 128, 224 x 224, in a dry run on
# the meta device, 977.7 MiB against 2055.8 MiB for auglocal_r34_imagenet.py
# and 4134.6 MiB for BP. Its cost is host-device traffic (the heads'
# parameters and momentum, 1178 MiB in and out per iteration), not FLOPs;
# its time on a GPU has not been measured.
#   bash tools/dist_train.sh configs/auglocal_r34_offload_imagenet.py 8
_base_ = ['./auglocal_r34_imagenet.py']

model = dict(aux_head_offload=dict(host='cpu'))
