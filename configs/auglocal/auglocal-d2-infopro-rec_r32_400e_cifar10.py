# AugLocal (Ma et al., ICLR 2024), Table 8: ResNet-32 on CIFAR-10: SGD
# Nesterov 0.9, wd 1e-4, batch 1024, lr 0.8, cosine, 400 epochs (AugLocal
# paper, training setups). AugLocal d = 2 (pyramid, tau = 0.5) with InfoPro's
# reconstruction loss added to its cross-entropy: each local loss is
# CE(AugLocal head) + lambda_x * BCE(decoder(h), image), lambda_x interpolated
# (5.0, 0.2) from the first to the last auxiliary head (InfoPro's published
# weights for this network; our choice). The heads are composed
# (ComposedAuxHead), not copied.
_base_ = [
    '../_base_/models/local_cifar_resnet32.py',
    '../_base_/datasets/cifar10_bs1024.py',
    # the official lr schedule, once per epoch (per iteration: *_smooth.py)
    '../_base_/schedules/cifar_bs1024_sgd_cos_400e.py',
    '../_base_/small_image_runtime.py',
]

model = dict(
    aux_head=dict(
        type='ComposedAuxHead',
        heads=[
            dict(
                type='AugLocalAuxHead',
                depth=2,
                pyramid=True,
                tau=0.5,
                bn1d_if_shallow=True),
            # InfoPro's reconstruction term only (no second classifier)
            dict(
                type='InfoProAuxHead',
                loss_mode='none',
                arch='cifar',
                lambda_x=(5.0, 0.2)),
        ]),
    # the official CIFAR script: K' = K - d = 14 local modules, auxiliary
    # heads on layers 0..12, the last d + 1 = 3 blocks trained end to
    # end with the output layer
    split_points=[*range(13), 15])
