# Runtime of the small-image configs: default_runtime.py with a log line
# every 10 iterations (an epoch of CIFAR-10 at batch 1024 is 49 of them),
# the local-learning DDP wrapper (used only when launched on several GPUs)
# and the layer-wise accuracy figure.
_base_ = ['./default_runtime.py']

default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=10, max_keep_ckpts=2))
log_processor = dict(window_size=10)

model_wrapper_cfg = dict(type='LocalDistributedDataParallel')

custom_hooks = [
    # <work_dir>/layerwise_accuracy.png: val top-1 against local module
    dict(type='LayerwiseAccuracyPlotHook'),
]
