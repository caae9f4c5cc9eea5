from .epoch_cosine_lr import EpochCosineLR

__all__ = ['EpochCosineLR']
