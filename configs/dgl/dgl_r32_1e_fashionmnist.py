# DGL (Belilovsky et al., ICML 2020) on Fashion-MNIST: ResNet-32 on 28 x 28
# grey images, the recipe of the Fashion-MNIST table in docs/benchmarks.md
# (_base_/fashionmnist_r32_1e.py, the same for every rule). The rule as in
# dgl_r32_400e_cifar10.py: K = 16 local modules, the auxiliary network of the
# AugLocal paper's appendix A.3.
_base_ = ['../_base_/fashionmnist_r32_1e.py']

model = dict(
    aux_head=dict(
        type='DGLAuxHead', num_convs=3, num_hidden_fc=2,
        hidden_fc_bias=False))
