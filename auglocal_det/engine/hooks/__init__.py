from .atomic_checkpoint_hook import (
    AtomicCheckpointHook,
    AtomicLocalBackend,
    CheckpointWriteError,
)
from .export_backbone_hook import ExportBackboneHook
from .layerwise_accuracy_plot_hook import (
    LayerwiseAccuracyPlotHook,
    plot_layerwise_accuracy,
)
from .local_pipeline_hook import LocalPipelineHook
from .non_finite_loss_hook import NonFiniteLossHook
from .preemption_hook import (
    EXIT_PREEMPTED,
    PreemptionCheckpointHook,
    TrainingPreempted,
)
from .train_data_check_hook import TrainDataCheckHook, head_class_counts
from .training_memory_hook import TrainingMemoryHook
from .work_dir_lock_hook import WorkDirLock, WorkDirLockHook

__all__ = [
    'AtomicCheckpointHook', 'AtomicLocalBackend', 'CheckpointWriteError',
    'ExportBackboneHook', 'LayerwiseAccuracyPlotHook', 'LocalPipelineHook',
    'NonFiniteLossHook',
    'plot_layerwise_accuracy', 'EXIT_PREEMPTED', 'PreemptionCheckpointHook',
    'TrainingPreempted', 'TrainDataCheckHook', 'head_class_counts',
    'WorkDirLock', 'WorkDirLockHook', 'TrainingMemoryHook'
]
