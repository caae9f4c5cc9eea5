# BP with gradient checkpointing (the memory baseline of the AugLocal paper,
# Ma et al., ICLR 2024, Tables 2 and 6): the ResNet-32 BP run of
# bp_r32_400e_cifar10.py with every residual block recomputed in the backward
# pass (backbone with_cp=True): the same gradients, less activation memory,
# more compute.
_base_ = ['./bp_r32_400e_cifar10.py']

model = dict(backbone=dict(with_cp=True))
