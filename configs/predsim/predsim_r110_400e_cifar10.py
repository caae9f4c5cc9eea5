# PredSim (Nokland & Eidnes, ICML 2019) on the AugLocal paper's (Ma et al.,
# ICLR 2024) Table 1 setting: ResNet-110 on CIFAR-10: SGD Nesterov 0.9, wd
# 1e-4, batch 1024, lr 0.8, cosine, 400 epochs (AugLocal paper, training
# setups). K = 55 local modules, one per local layer (the stem and every
# block), 54 auxiliary networks; the per-block variant the AugLocal paper
# compared against (appendix A.3): prediction head AvgPool to 512 features +
# FC, similarity head 3x3 conv; local loss 0.99 * L_sim + 0.01 * L_pred (beta
# = 0.99)
_base_ = [
    '../_base_/models/local_cifar_resnet110.py',
    '../_base_/datasets/cifar10_bs1024.py',
    # the official lr schedule, once per epoch (per iteration: *_smooth.py)
    '../_base_/schedules/cifar_bs1024_sgd_cos_400e.py',
    '../_base_/small_image_runtime.py',
]

model = dict(
    aux_head=dict(
        type='PredSimAuxHead', hidden_dim=512, lambda_x=0.99,
        lambda_y=0.01))
