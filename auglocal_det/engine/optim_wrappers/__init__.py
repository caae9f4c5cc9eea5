from auglocal_det.local_protocol import check_local_optim_wrapper

from .layerwise_optim_wrapper import (
    AmpLayerwiseLocalOptimWrapper,
    LayerwiseLocalOptimWrapper,
)
from .local_optim_wrapper import AmpLocalOptimWrapper, LocalOptimWrapper

__all__ = [
    'LocalOptimWrapper', 'AmpLocalOptimWrapper', 'LayerwiseLocalOptimWrapper',
    'AmpLayerwiseLocalOptimWrapper', 'check_local_optim_wrapper'
]
