# End-to-end back-propagation (BP), the baseline of the AugLocal paper (Ma et
# al., ICLR 2024) on Fashion-MNIST: ResNet-32 on 28 x 28 grey images, the
# recipe of the Fashion-MNIST table in docs/benchmarks.md
# (_base_/fashionmnist_r32_1e.py, the same for every rule). One loss, one
# backward (rule='bp'), no auxiliary network.
_base_ = ['../_base_/fashionmnist_r32_1e.py']

model = dict(rule='bp')
val_evaluator = [dict(type='Accuracy', topk=(1, ))]
test_evaluator = val_evaluator
