# Runtime settings shared by every config of this package.
# ``default_scope='mmdet'``: names resolve in mmdet's registries first and
# then in MMEngine's root registries, where auglocal_det registers its
# classes, so the ImageNet configs also run where mmdet is not installed.
default_scope = 'mmdet'
custom_imports = dict(imports=['auglocal_det'], allow_failed_imports=False)

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # CheckpointHook with atomic writes: a crash or a full disk while saving
    # never corrupts the latest checkpoint or last_checkpoint
    checkpoint=dict(
        type='AtomicCheckpointHook', interval=1, max_keep_ckpts=3),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    # one job per work dir; no new run over an earlier run's checkpoints
    # (tools/train.py --overwrite sets overwrite=True)
    work_dir_lock=dict(type='WorkDirLockHook'),
    # num_classes of the model and its heads against the training data; a
    # last batch of one image (BatchNorm)
    train_data_check=dict(type='TrainDataCheckHook'),
    # SIGTERM / SIGUSR1: finish the iteration, save it, exit with status 75
    preemption=dict(type='PreemptionCheckpointHook'))

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))

vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(
    type='Visualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=True)

log_level = 'INFO'
load_from = None
resume = False
