# DGL (Belilovsky et al., ICML 2020) on the AugLocal paper's (Ma et al., ICLR
# 2024) Table 1 setting: ResNet-110 on SVHN: SGD Nesterov 0.9, wd 1e-4, batch
# 1024, lr 0.8, cosine, 400 epochs (AugLocal paper, training setups). K = 55
# local modules, one per local layer (the stem and every block), 54 auxiliary
# networks; the auxiliary network the AugLocal paper compared against
# (appendix A.3): AP(H/4) - 3 x (1x1 conv, BN, ReLU) - AP(2) - 2 x (FC 4C->4C
# without bias, BN1d, ReLU) - FC; pool sizes from the real feature size
_base_ = [
    '../_base_/models/local_cifar_resnet110.py',
    '../_base_/datasets/svhn_bs1024.py',
    # the official lr schedule, once per epoch (per iteration: *_smooth.py)
    '../_base_/schedules/cifar_bs1024_sgd_cos_400e.py',
    '../_base_/small_image_runtime.py',
]

model = dict(
    aux_head=dict(
        type='DGLAuxHead', num_convs=3, num_hidden_fc=2,
        hidden_fc_bias=False))
