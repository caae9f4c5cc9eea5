# LocalImageClassifier on torchvision's VGG-13 with BatchNorm (LocalVGG,
# every convolution with bias, BN and ReLU: the VGG of the official AugLocal
# ImageNet code, exp_imagenet/networks/vgg.py) for ImageNet: L = 10 local
# layers, one per convolution (the max-pool before it belongs to it, the
# last one also owns the final max-pool), one local module per layer
# (K = 10, as that code's vgg13 table), and torchvision's classifier
# (7 x 7 pooling, two 4096-wide FC layers with dropout; VGGClassifierHead).
# AugLocal as in that code: auxiliary depth d = 4 (the depth of its
# ImageNet run, run.sh), one 2 x 2 max-pool before every sampled layer
# whose width differs from the previous one (stride_rule='width-change'),
# and the auxiliary classifier of VGG with hidden width 512 instead of
# 4096 (the AugLocal paper; two FC - BatchNorm1d - ReLU after global
# pooling).
model = dict(
    type='LocalImageClassifier',
    backbone=dict(type='LocalVGG', depth=13),
    head=dict(type='VGGClassifierHead', hidden_channels=4096),
    aux_head=dict(
        type='AugLocalAuxHead',
        depth=4,
        pyramid=False,
        stride_rule='width-change',
        hidden_channels=(512, 512),
        # PyTorch's default initialisation (no init_cfg), as the official
        # VGG code leaves its auxiliary networks (built after its
        # initialisation loop)
        init_cfg=[]),
    num_classes=1000,
    image_size=224,  # the training crop (RandomResizedCrop 224)
    split_points=None,  # K = number of local layers (10)
    rule='local',
    # uint8 RGB images in, ImageNet mean/std normalisation on the device
    data_preprocessor=dict(
        type='ImgDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=False))
