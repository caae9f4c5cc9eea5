# LocalImageClassifier on an ImageNet ResNet-34 (torchvision layout).
# Paper recipe (AugLocal, Ma et al., ICLR 2024, ImageNet experiments): one
# local module per local layer, i.e. K = 17 (the stem and the 16
# BasicBlocks; split_points=None), 16 auxiliary heads on layers 0..15 and
# the last block trained through the network's own pooling + FC.
# AugLocal's auxiliary depth d = 4 without the pyramid (the official
# ImageNet run); tau is the pyramid coefficient, used only if pyramid=True.
model = dict(
    type='LocalImageClassifier',
    backbone=dict(type='LocalResNet', depth=34),
    aux_head=dict(type='AugLocalAuxHead', depth=4, pyramid=False, tau=0.5),
    num_classes=1000,
    image_size=224,  # the training crop (RandomResizedCrop 224)
    split_points=None,  # K = number of local layers (17)
    rule='local',
    # uint8 RGB images in, ImageNet mean/std normalisation on the device
    data_preprocessor=dict(
        type='ImgDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=False))
