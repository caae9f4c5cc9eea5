# InfoPro (Wang et al., ICLR 2021) on the AugLocal paper's (Ma et al., ICLR
# 2024) Table 1 setting: ResNet-110 on SVHN: SGD Nesterov 0.9, wd 1e-4, batch
# 1024, lr 0.8, cosine, 400 epochs (AugLocal paper, training setups). K = 55
# local modules, one per local layer (the stem and every block), 54 auxiliary
# networks; as re-implemented for the AugLocal paper (appendix A.3):
# classifier conv3x3 - BN - ReLU - AP - FC(128) - ReLU - FC with cross-
# entropy, plus the reconstruction decoder (BCE against the un-normalised
# image) Loss weights lambda_x (5.0, 0.5), lambda_y (0.0, 1.0) (first, last
# head) of ResNet-110, K = 55 (AugLocal code).
_base_ = [
    '../_base_/models/local_cifar_resnet110.py',
    '../_base_/datasets/svhn_bs1024.py',
    # the official lr schedule, once per epoch (per iteration: *_smooth.py)
    '../_base_/schedules/cifar_bs1024_sgd_cos_400e.py',
    '../_base_/small_image_runtime.py',
]

model = dict(
    aux_head=dict(
        type='InfoProAuxHead',
        loss_mode='ce',
        arch='cifar',
        lambda_x=(5.0, 0.5),
        lambda_y=(0.0, 1.0)))
