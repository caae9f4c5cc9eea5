# InfoPro (Wang et al., ICLR 2021) on the AugLocal paper's (Ma et al., ICLR
# 2024) Table 1 setting: ResNet-32 on CIFAR-10: SGD Nesterov 0.9, wd 1e-4,
# batch 1024, lr 0.8, cosine, 400 epochs (AugLocal paper, training setups). K
# = 16 local modules, one per local layer (the stem and every block), 15
# auxiliary networks; as re-implemented for the AugLocal paper (appendix A.3):
# classifier conv3x3 - BN - ReLU - AP - FC(128) - ReLU - FC with cross-
# entropy, plus the reconstruction decoder (BCE against the un-normalised
# image) Loss weights lambda_x (5.0, 0.2), lambda_y (0.05, 0.5) (first, last
# head) of ResNet-32, K = 16 (InfoPro and AugLocal code).
_base_ = [
    '../_base_/models/local_cifar_resnet32.py',
    '../_base_/datasets/cifar10_bs1024.py',
    # the official lr schedule, once per epoch (per iteration: *_smooth.py)
    '../_base_/schedules/cifar_bs1024_sgd_cos_400e.py',
    '../_base_/small_image_runtime.py',
]

model = dict(
    aux_head=dict(
        type='InfoProAuxHead',
        loss_mode='ce',
        arch='cifar',
        lambda_x=(5.0, 0.2),
        lambda_y=(0.05, 0.5)))
