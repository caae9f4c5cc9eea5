from .resumable_epoch_loop import ResumableEpochBasedTrainLoop, iteration_seeds
from .resume_checkpoint import (
    checkpoint_problem,
    previous_good_checkpoint,
    resolve_resume_checkpoint,
)

__all__ = [
    'ResumableEpochBasedTrainLoop', 'iteration_seeds', 'checkpoint_problem',
    'previous_good_checkpoint', 'resolve_resume_checkpoint'
]
