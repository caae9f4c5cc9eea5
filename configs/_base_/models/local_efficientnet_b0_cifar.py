# LocalImageClassifier on torchvision's EfficientNet-B0 (LocalEfficientNet)
# for 32 x 32 images: L = 17 local layers (the stem convolution and the 16
# MBConv blocks; the last 1x1 convolution belongs to the last block's layer),
# as the AugLocal paper counts them (Ma et al., ICLR 2024, Table 3).
# The CIFAR variant: the stem convolution has stride 1 instead of
# torchvision's 2 (stem_stride=1; every other layer is torchvision's), the
# usual change for 32-px images, so that the four strided stages leave a
# 2 x 2 map instead of 1 x 1.
# One local module per layer (split_points=None) unless a config says
# otherwise; the auxiliary head (aux_head) is set by each method's config,
# the normalisation comes with the data set (its data_preprocessor).
model = dict(
    type='LocalImageClassifier',
    backbone=dict(type='LocalEfficientNet', stem_stride=1),
    num_classes=10,
    image_size=32,
    split_points=None,
    rule='local')
