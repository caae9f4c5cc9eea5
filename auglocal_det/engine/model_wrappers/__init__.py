from .local_ddp import LocalDistributedDataParallel

__all__ = ['LocalDistributedDataParallel']
