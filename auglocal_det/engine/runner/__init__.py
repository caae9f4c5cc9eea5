from .checkpoint import load_local_checkpoint, trusted_local_checkpoints
from .local_runner import LocalRunner
from .resumable_epoch_loop import ResumableEpochBasedTrainLoop, iteration_seeds
from .resume_checkpoint import (
    checkpoint_problem,
    previous_good_checkpoint,
    resolve_resume_checkpoint,
)

__all__ = [
    'LocalRunner', 'ResumableEpochBasedTrainLoop', 'iteration_seeds',
    'load_local_checkpoint', 'trusted_local_checkpoints', 'checkpoint_problem',
    'previous_good_checkpoint', 'resolve_resume_checkpoint'
]
