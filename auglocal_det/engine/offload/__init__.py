from .host_offload import HostOffload
from .host_storage import HostMemoryStorage, MappedFileStorage

__all__ = ['HostOffload', 'HostMemoryStorage', 'MappedFileStorage']
