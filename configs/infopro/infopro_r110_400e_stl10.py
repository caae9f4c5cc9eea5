# InfoPro (Wang et al., ICLR 2021) on the AugLocal paper's (Ma et al., ICLR
# 2024) Table 1 setting: ResNet-110 on STL-10: SGD Nesterov 0.9, wd 1e-4,
# batch 128, lr 0.1, cosine, 400 epochs (AugLocal paper, training setups). K =
# 55 local modules, one per local layer (the stem and every block), 54
# auxiliary networks; as re-implemented for the AugLocal paper (appendix A.3):
# classifier conv3x3 - BN - ReLU - AP - FC(128) - ReLU - FC with cross-
# entropy, plus the reconstruction decoder (BCE against the un-normalised
# image) Loss weights lambda_x (5.0, 0.5), lambda_y (0.0, 1.0) (first, last
# head) of ResNet-110, K = 55 (AugLocal code).
_base_ = [
    '../_base_/models/local_cifar_resnet110.py',
    '../_base_/datasets/stl10_bs128.py',
    # the official lr schedule, once per epoch (per iteration: *_smooth.py)
    '../_base_/schedules/stl10_bs128_sgd_cos_400e.py',
    '../_base_/small_image_runtime.py',
]

model = dict(
    image_size=96,  # STL-10: 96 x 96 crops
    aux_head=dict(
        type='InfoProAuxHead',
        loss_mode='ce',
        arch='cifar',
        lambda_x=(5.0, 0.5),
        lambda_y=(0.0, 1.0)))
