# PredSim (Nokland & Eidnes, ICML 2019) on Fashion-MNIST: ResNet-32 on 28 x 28
# grey images, the recipe of the Fashion-MNIST table in docs/benchmarks.md
# (_base_/fashionmnist_r32_1e.py, the same for every rule). The rule as in
# predsim_r32_400e_cifar10.py: K = 16 local modules, 15 auxiliary networks,
# local loss 0.99 * L_sim + 0.01 * L_pred.
_base_ = ['../_base_/fashionmnist_r32_1e.py']

model = dict(
    aux_head=dict(
        type='PredSimAuxHead', hidden_dim=512, lambda_x=0.99,
        lambda_y=0.01))
