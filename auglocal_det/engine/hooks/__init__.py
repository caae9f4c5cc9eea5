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

__all__ = [
    'AtomicCheckpointHook', 'AtomicLocalBackend', 'CheckpointWriteError',
    'ExportBackboneHook', 'LayerwiseAccuracyPlotHook',
    'plot_layerwise_accuracy'
]
