from .resumable_epoch_loop import ResumableEpochBasedTrainLoop, iteration_seeds

__all__ = ['ResumableEpochBasedTrainLoop', 'iteration_seeds']
