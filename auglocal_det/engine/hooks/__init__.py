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
from .local_pipeline_hook import LocalPipelineHook
from .layerwise_accuracy_plot_hook import (
    LayerwiseAccuracyPlotHook,
    plot_layerwise_accuracy,
)

__all__ = [
    'AtomicCheckpointHook', 'AtomicLocalBackend', 'CheckpointWriteError',
    'ExportBackboneHook', 'NotAClassifierCheckpointError', 'export_backbone',
    'export_checkpoint', 'split_classifier_state_dict',
    'to_torchvision_state_dict', 'LayerwiseAccuracyPlotHook',
    'LocalPipelineHook',
    'plot_layerwise_accuracy'
]
