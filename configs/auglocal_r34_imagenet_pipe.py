# AugLocal ResNet-34 on ImageNet-1k (Ma et al., ICLR 2024), trained as a
# pipeline: the 17 local modules are split into `num_stages` consecutive
# stages, one per GPU, that train at the same time (update unlocking; the
# paper's Appendix A.1 bound). The updates equal those of
# auglocal_r34_imagenet.py: the paper's batch of 1024 is 8 accumulated
# batches of 128 (each normalised by BatchNorm on its own, as on one of the
# paper's 8 GPUs), with one optimizer step per 1024 images.
#   bash tools/dist_train.sh configs/auglocal_r34_imagenet_pipe.py 8
# With 16 GPUs (2 replicas of the 8-stage pipeline) halve
# optim_wrapper.accumulative_counts to keep the batch of 1024.
_base_ = ['./auglocal_r34_imagenet.py']

num_stages = 8

# stages balanced by the FLOPs of each module and its auxiliary head
# (printed at start with the predicted efficiency). balance='time' balances
# the training time of each module instead, measured at start on every GPU
# (add profile_batch_size=128: two iterations of the whole network on a
# synthetic batch, no update); balance=[...] sets the modules per stage.
model_wrapper_cfg = dict(
    _delete_=True,
    type='LocalPipelineParallel',
    num_stages=num_stages,
    balance='auto')

# the data set is sharded over the replicas; only a replica's first stage
# reads it
train_dataloader = dict(
    sampler=dict(type='PipelineSampler', num_stages=num_stages))

# 8 x 128 = 1024 images per update, as 128 x 8 GPUs in the paper; the
# accumulation needs the one optimizer step per update
optim_wrapper = dict(type='LocalOptimWrapper', accumulative_counts=8)

custom_hooks = [
    # empty loaders on later stages; the whole network on rank 0 before
    # every checkpoint and the export; every module's log on rank 0
    dict(type='LocalPipelineHook'),
    dict(type='ExportBackboneHook'),
    dict(type='LayerwiseAccuracyPlotHook'),
]
