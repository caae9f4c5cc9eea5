# AugLocal (Ma et al., ICLR 2024), Table 3: MobileNetV2 on CIFAR-10
# (L = 19 local layers) with auxiliary depth d = 3. The recipe of the
# package's Table 1 ResNet configs: SGD Nesterov 0.9, wd 1e-4, batch 1024,
# lr 0.8, cosine, 400 epochs (AugLocal paper, training setups), pyramidal
# depth with tau = 0.5 and, as the official CIFAR script, auxiliary
# networks on the first L - d - 1 layers only and a BatchNorm1d before the
# classifier of heads of depth 1. The auxiliary layers are fresh layers of
# the sampled layers' kind (LocalLayerSpec.fresh_layer); their strides
# follow the backbone's resolution (stride_rule='auto').
_base_ = [
    '../_base_/models/local_mobilenet_v2_cifar.py',
    '../_base_/datasets/cifar10_bs1024.py',
    # the official lr schedule, once per epoch (per iteration: *_smooth.py)
    '../_base_/schedules/cifar_bs1024_sgd_cos_400e.py',
    '../_base_/small_image_runtime.py',
]

model = dict(
    aux_head=dict(
        type='AugLocalAuxHead',
        depth=3,
        pyramid=True,
        tau=0.5,
        bn1d_if_shallow=True),
    # K' = L - d = 16 local modules: auxiliary heads on layers
    # 0..14, the last d + 1 = 4 layers trained end to end with the
    # output layer
    split_points=[*range(15), 18])
