# End-to-end back-propagation (BP) baseline of the AugLocal paper (Ma et al.,
# ICLR 2024), Table 1: ResNet-110 on SVHN: SGD Nesterov 0.9, wd 1e-4, batch
# 1024, lr 0.8, cosine, 400 epochs (AugLocal paper, training setups). One
# loss, one backward (rule='bp'), no auxiliary network.
_base_ = [
    '../_base_/models/local_cifar_resnet110.py',
    '../_base_/datasets/svhn_bs1024.py',
    # the official lr schedule, once per epoch (per iteration: *_smooth.py)
    '../_base_/schedules/cifar_bs1024_sgd_cos_400e.py',
    '../_base_/small_image_runtime.py',
]

model = dict(
    rule='bp')
# no auxiliary heads, so no per-layer accuracies
val_evaluator = [dict(type='Accuracy', topk=(1, ))]
test_evaluator = val_evaluator
