# LocalImageClassifier on torchvision's RegNetX-400MF (LocalRegNet) for
# 32 x 32 images: L = 23 local layers (the stem and the 1 + 2 + 7 + 12
# blocks), as the AugLocal paper counts them (Ma et al., ICLR 2024,
# Table 3).
# The CIFAR variant: the stem convolution has stride 1 instead of
# torchvision's 2 (stem_stride=1; every other layer is torchvision's), the
# usual change for 32-px images, so that the four strided stages leave a
# 2 x 2 map instead of 1 x 1.
# One local module per layer (split_points=None) unless a config says
# otherwise; the auxiliary head (aux_head) is set by each method's config,
# the normalisation comes with the data set (its data_preprocessor).
model = dict(
    type='LocalImageClassifier',
    backbone=dict(type='LocalRegNet', arch='regnet_x_400mf', stem_stride=1),
    num_classes=10,
    image_size=32,
    split_points=None,
    rule='local')
