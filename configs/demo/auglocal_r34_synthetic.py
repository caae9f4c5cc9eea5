# The one-command demo's AugLocal ResNet-34 (tools/demo.py) on the synthetic
# shapes data set (configs/_base_/datasets/synthetic_imagenet.py: 8 classes,
# 36 px JPEGs in the ImageNet folder layout).
# The pipeline of auglocal_r34_synthetic_full.py (LocalImageClassifier +
# LocalResNet-34, K = 17, AugLocal d = 4 without the pyramid as in the
# paper's ImageNet run, LocalOptimWrapper, export, layer-wise plot and
# memory hooks), with the choices that fit the demo's 10 minutes on 2 CPU
# cores and keep the comparison with BP fair (measured in
# docs/benchmarks.md#demo):
# - the auxiliary networks at the paper's width (widen_factor=1.0);
# - batch 32: at 32 px crops an iteration of AugLocal costs little more at
#   batch 32 than at 16, its 146M auxiliary parameters dominate;
# - AdamW, lr 2e-3, weight decay 0.05, a 10-iteration warm-up and cosine
#   decay to 0 over the whole run, for both rules;
# - one validation, at the end.
#   python tools/demo.py --stages pretrain   (generates the data, trains,
#                                             exports)
_base_ = ['./auglocal_r34_synthetic_full.py']

# the data set of synthetic_imagenet.py (3,200 train / 400 val images),
# not the full demo's
synthetic_data = dict(num_train_per_class=400, num_val_per_class=50)
data_root = 'data/synthetic_imagenet/'
train_dataloader = dict(batch_size=32, dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader

max_epochs = 2
model = dict(aux_head=dict(widen_factor=1.0))
optim_wrapper = dict(optimizer=dict(lr=2e-3, fused=True))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0,
         end=10),
    dict(
        type='CosineAnnealingLR',
        T_max=max_epochs,
        eta_min=0.,
        by_epoch=True,
        begin=0,
        end=max_epochs,
        convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
auto_scale_lr = dict(base_batch_size=32)
default_hooks = dict(
    checkpoint=dict(interval=max_epochs),
    logger=dict(interval=10))
