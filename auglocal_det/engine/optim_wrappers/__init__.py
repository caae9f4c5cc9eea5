from .layerwise_optim_wrapper import (
                                      AmpLayerwiseLocalOptimWrapper,
                                      LayerwiseLocalOptimWrapper,
)
from .local_optim_wrapper import AmpLocalOptimWrapper, LocalOptimWrapper

__all__ = [
    'LocalOptimWrapper', 'AmpLocalOptimWrapper', 'LayerwiseLocalOptimWrapper',
    'AmpLayerwiseLocalOptimWrapper'
]
