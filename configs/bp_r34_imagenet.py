# End-to-end backpropagation baseline for AugLocal ResNet-34 on ImageNet-1k:
# the same network, data, optimizer and schedule as
# auglocal_r34_imagenet.py (SGD Nesterov 0.9, wd 1e-4, batch 1024, lr 0.4,
# cosine, 200 epochs), trained with one loss and one backward (rule='bp').
_base_ = ['./auglocal_r34_imagenet.py']

# the plain baseline: the memory options of auglocal_r34_imagenet.py off
model = dict(
    rule='bp',
    aux_head=None,
    backbone=dict(stem_chunk_size=None, with_cp=False, cp_stages=None))
optim_wrapper = dict(type='LocalOptimWrapper')
# no auxiliary heads, so no per-layer accuracies
val_evaluator = [dict(type='Accuracy', topk=(1, 5))]
test_evaluator = val_evaluator
