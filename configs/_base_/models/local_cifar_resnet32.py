# LocalImageClassifier on the CIFAR ResNet-32 of the local-learning papers
# (stem 16C3 + 3 x 5 BasicBlocks of widths 16/32/64): K = 16 local layers,
# one local module per layer (split_points=None) unless a config says
# otherwise. The auxiliary head (aux_head) is set by each method's config;
# the normalisation comes with the data set (its data_preprocessor).
model = dict(
    type='LocalImageClassifier',
    backbone=dict(type='LocalCifarResNet', depth=32),
    num_classes=10,
    image_size=32,  # the training crop; 96 on STL-10
    split_points=None,
    rule='local')
