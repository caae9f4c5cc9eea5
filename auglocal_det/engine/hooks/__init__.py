from .atomic_checkpoint_hook import (
    AtomicCheckpointHook,
    AtomicLocalBackend,
    CheckpointWriteError,
)
from .export_backbone_hook import (
    ExportBackboneHook,
    NotAClassifierCheckpointError,
    export_backbone,
    export_checkpoint,
    split_classifier_state_dict,
    to_torchvision_state_dict,
)
from .layerwise_accuracy_plot_hook import (
    LayerwiseAccuracyPlotHook,
    plot_layerwise_accuracy,
)
from .training_memory_hook import TrainingMemoryHook, read_proc_status

__all__ = [
    'AtomicCheckpointHook', 'AtomicLocalBackend', 'CheckpointWriteError',
    'ExportBackboneHook', 'NotAClassifierCheckpointError', 'export_backbone',
    'export_checkpoint', 'split_classifier_state_dict',
    'to_torchvision_state_dict', 'LayerwiseAccuracyPlotHook',
    'plot_layerwise_accuracy', 'TrainingMemoryHook', 'read_proc_status'
]
