from .local_ddp import LocalDistributedDataParallel
from .local_pipeline import (
    LocalPipelineParallel,
    PipelineStoppedError,
    balance_stages,
    module_costs,
)

__all__ = [
    'LocalDistributedDataParallel', 'LocalPipelineParallel',
    'PipelineStoppedError', 'balance_stages', 'module_costs'
]
