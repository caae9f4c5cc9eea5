from .checkpoint import (
    UnsafeCheckpointError,
    checkpoint_safe_globals,
    disallowed_globals,
    load_local_checkpoint,
    read_config_text,
    read_dumped_config,
    safe_local_checkpoints,
    trusted_checkpoints,
)
from .local_runner import LocalRunner
from .resumable_epoch_loop import ResumableEpochBasedTrainLoop, iteration_seeds
from .resume_checkpoint import (
    checkpoint_problem,
    named_resume_checkpoint,
    previous_good_checkpoint,
    resolve_resume_checkpoint,
)

__all__ = [
    'LocalRunner', 'ResumableEpochBasedTrainLoop', 'iteration_seeds',
    'UnsafeCheckpointError', 'checkpoint_safe_globals', 'disallowed_globals',
    'load_local_checkpoint', 'read_config_text', 'read_dumped_config',
    'safe_local_checkpoints', 'trusted_checkpoints', 'checkpoint_problem',
    'named_resume_checkpoint',
    'previous_good_checkpoint', 'resolve_resume_checkpoint'
]
