# End-to-end backpropagation baseline of the full demo (tools/demo.py
# --full): the network, data and schedule of auglocal_r34_synthetic_full.py
# trained with one loss and one backward (rule='bp').
_base_ = ['./auglocal_r34_synthetic_full.py']

model = dict(rule='bp', aux_head=None)
val_evaluator = [dict(type='Accuracy', topk=(1, 5))]
test_evaluator = val_evaluator
