# AugLocal ResNet-34 on ImageNet-1k, the network and recipe of
# auglocal_r34_imagenet.py for training on CPUs: between their uses the
# auxiliary heads' parameters, BatchNorm buffers and momentum rest in
# memory-mapped files whose pages are dropped from the process after each
# copy (HostOffload with host='file'), so they are not part of the
# process's resident memory. The same updates and BN statistics, bit for
# bit. Each head is read back just before its module's loss and written
# out right after the per-layer optimizer step of its module.
# The files are created in the temporary directory (TMPDIR) and unlinked
# at once; set model.aux_head_offload.directory to put them elsewhere. It
# must be on a disk: on a memory file system (tmpfs) they stay in memory.
# Measured on a 2-core CPU (docs/benchmarks.md, "AugLocal d = 4 against
# BP: memory"), 224 x 224, batch 128: the process's peak resident set
# 1854.9 MiB, 0.38x BP's 4926.9 MiB (auglocal_r34_imagenet.py: 2934.2 MiB,
# 0.60x); live tensors 977.7 MiB, 0.24x BP's. Its cost is the copies
# through the page cache, the heads' parameters and momentum (1178 MiB) in
# and out once per iteration: at batch 16, 0.99x the time per iteration of
# auglocal_r34_imagenet.py, within the noise.
#   python tools/train.py configs/auglocal_r34_fileoffload_imagenet.py
_base_ = ['./auglocal_r34_imagenet.py']

model = dict(aux_head_offload=dict(host='file'))
