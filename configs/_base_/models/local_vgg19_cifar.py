# LocalImageClassifier on torchvision's VGG-19 with BatchNorm (LocalVGG,
# every convolution with bias, BN and ReLU, as the VGG of the official
# AugLocal code) for 32 x 32 images: L = 16 local layers, one per
# convolution (the max-pool before it belongs to it).
# The usual CIFAR VGG: torchvision's features unchanged (the five max-pools
# leave 1 x 1 x 512 for a 32-px image) and the network's classifier is
# global pooling + one FC (the package's default head) instead of
# torchvision's 7 x 7 pooling and two 4096-wide FC layers.
# One local module per layer (split_points=None) unless a config says
# otherwise; the auxiliary head (aux_head) is set by each method's config,
# the normalisation comes with the data set (its data_preprocessor).
model = dict(
    type='LocalImageClassifier',
    backbone=dict(type='LocalVGG', depth=19),
    num_classes=10,
    image_size=32,
    split_points=None,
    rule='local')
