# End-to-end back-propagation baseline for AugLocal VGG-13 on ImageNet-1k:
# the network, data, optimizer and schedule of
# auglocal-d4_vgg13_200e_imagenet.py, trained with one loss and one backward
# (rule='bp').
_base_ = ['../auglocal/auglocal-d4_vgg13_200e_imagenet.py']

model = dict(rule='bp', aux_head=None)
# no auxiliary heads, so no per-layer accuracies
val_evaluator = [dict(type='Accuracy', topk=(1, 5))]
test_evaluator = val_evaluator
