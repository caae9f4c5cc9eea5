# End-to-end back-propagation (BP) baseline of the AugLocal paper (Ma et al.,
# ICLR 2024), Table 1: ResNet-110 on STL-10: SGD Nesterov 0.9, wd 1e-4, batch
# 128, lr 0.1, cosine, 400 epochs (AugLocal paper, training setups). One loss,
# one backward (rule='bp'), no auxiliary network.
_base_ = [
    '../_base_/models/local_cifar_resnet110.py',
    '../_base_/datasets/stl10_bs128.py',
    # the official lr schedule, once per epoch (per iteration: *_smooth.py)
    '../_base_/schedules/stl10_bs128_sgd_cos_400e.py',
    '../_base_/small_image_runtime.py',
]

model = dict(
    image_size=96,  # STL-10: 96 x 96 crops
    rule='bp')
# no auxiliary heads, so no per-layer accuracies
val_evaluator = [dict(type='Accuracy', topk=(1, ))]
test_evaluator = val_evaluator
