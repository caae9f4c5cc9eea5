from .layerwise_optim_wrapper import (
    AmpLayerwiseLocalOptimWrapper,
    LayerwiseLocalOptimWrapper,
)
from .local_optim_wrapper import (
    AmpLocalOptimWrapper,
    LocalOptimWrapper,
    check_local_optim_wrapper,
)

__all__ = [
    'LocalOptimWrapper', 'AmpLocalOptimWrapper', 'LayerwiseLocalOptimWrapper',
    'AmpLayerwiseLocalOptimWrapper', 'check_local_optim_wrapper'
]
