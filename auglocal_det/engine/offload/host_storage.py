"""The two places :class:`HostOffload` keeps its host copies.

:class:`HostMemoryStorage` keeps them in host memory, pinned when the
compute device is a GPU so that copies overlap with its compute.
:class:`MappedFileStorage`, for training on the CPU, keeps each in a file,
created in ``directory`` and unlinked at once, mapped into the process
(``torch.UntypedStorage.from_file``, shared). After every copy in or out
the mapping's pages are dropped from the process
(``madvise(MADV_DONTNEED)``; the kernel keeps the data, written back to
the file, in its page cache, which it may reclaim), so between their uses
the copies are not part of the process's resident memory. The copies
themselves read and write the file through a descriptor kept open with
the copy (``os.preadv``, ``os.pwrite``): the page cache is the mapping's,
so reads of the mapping, such as a checkpoint's, and writes into it, such
as loading a state dict, see the same bytes, and a copy through the
descriptor is several times faster than faulting the mapping in page by
page. Copies smaller than ``min_file_bytes`` (BatchNorm's vectors, biases)
stay in memory. The directory must be on a disk: on a memory file system
(tmpfs) the files would stay in memory.
"""
import ctypes
import mmap
import os
import tempfile
from typing import Optional, Union

import torch

__all__ = ['HostMemoryStorage', 'MappedFileStorage']


class HostMemoryStorage:
    """Host copies in memory on ``host`` (pinned for a CUDA device).

    Args:
        host (str | torch.device): The device of the copies.
        pin_memory (bool, optional): Pin the copies. Defaults to None:
            when the compute device is CUDA and the host the CPU.

    Raises:
        RuntimeError: If ``host`` is not a device.
    """

    #: whether the copies are files (out of the resident memory)
    in_files = False

    def __init__(self,
                 host: Union[str, torch.device] = 'cpu',
                 pin_memory: Optional[bool] = None) -> None:
        self.host = torch.device(host)
        self.pin_memory = pin_memory

    def pin(self, device: Optional[torch.device]) -> bool:
        """Whether copies for a tensor on ``device`` are pinned."""
        if self.pin_memory is not None:
            return self.pin_memory
        return (device is not None and device.type == 'cuda'
                and self.host.type == 'cpu')

    def new_copy(self, tensor: torch.Tensor, device: torch.device,
                 pin: bool) -> torch.Tensor:
        """An empty host copy of ``tensor`` (its strides too, so that
        channels-last weights stay so) on ``device``."""
        return torch.empty_strided(
            tensor.size(),
            tensor.stride(),
            dtype=tensor.dtype,
            device=device,
            pin_memory=pin)

    def keeps_in_file(self, tensor: torch.Tensor,
                      device: torch.device) -> bool:
        """Whether the copy of ``tensor`` goes to a file (never here)."""
        return False

    def copy(self, dst: torch.Tensor, src: torch.Tensor,
             host: Optional[torch.Tensor], non_blocking: bool) -> None:
        """``dst.copy_(src)``; ``host`` is whichever is the host copy."""
        dst.copy_(src, non_blocking=non_blocking)


class MappedFileStorage(HostMemoryStorage):
    """Host copies in memory-mapped files, out of the resident memory.

    Args:
        directory (str, optional): Where the files are created (unlinked
            as soon as they are mapped). Defaults to None: the temporary
            directory (``TMPDIR``).
        pin_memory (bool, optional): Must not be true: a mapped file
            cannot be pinned. Defaults to None.

    Raises:
        ValueError: If ``directory`` is not a writable directory or pinned
            memory is asked for.
    """

    in_files = True

    def __init__(self,
                 directory: Optional[str] = None,
                 pin_memory: Optional[bool] = None) -> None:
        if pin_memory:
            raise ValueError(
                "host='file' maps files, which cannot be pinned; set "
                'pin_memory=None')
        directory = tempfile.gettempdir() if directory is None \
            else os.path.expanduser(directory)
        if not (os.path.isdir(directory)
                and os.access(directory, os.W_OK | os.X_OK)):
            raise ValueError(
                f'directory={directory!r} is not a writable directory '
                "(host='file' creates its files there)")
        super().__init__('cpu', pin_memory)
        self.directory = directory
        #: copies below this size stay in memory (BatchNorm's vectors,
        #: biases: a page and a descriptor each for almost nothing)
        self.min_file_bytes = 1 << 16

    def keeps_in_file(self, tensor: torch.Tensor,
                      device: torch.device) -> bool:
        """Whether the copy of ``tensor`` goes to a file: unless it is
        small or a dry run's (on the meta device)."""
        return (device.type != 'meta' and
                tensor.numel() * tensor.element_size() >=
                self.min_file_bytes)

    def new_copy(self, tensor: torch.Tensor, device: torch.device,
                 pin: bool) -> torch.Tensor:
        """An empty copy of ``tensor`` in a new file (or in memory)."""
        if self.keeps_in_file(tensor, device):
            return self._file_copy(tensor)
        return super().new_copy(tensor, device, pin)

    def copy(self, dst: torch.Tensor, src: torch.Tensor,
             host: Optional[torch.Tensor], non_blocking: bool) -> None:
        """``dst.copy_(src)``, where one of them may be the host copy
        ``host``: if that is file-backed, through its descriptor when the
        bytes line up, and its pages dropped afterwards."""
        handle = getattr(host, '_offload_file', None)
        if handle is None:
            dst.copy_(src, non_blocking=non_blocking)
            return
        if handle.fd is not None and _same_bytes(src, dst):
            if dst is host:
                handle.write_from(src)
            else:
                handle.read_into(dst)
        else:
            dst.copy_(src)
        _drop_pages(host)

    def _file_copy(self, tensor: torch.Tensor) -> torch.Tensor:
        """An empty tensor like ``tensor`` (its strides too) in a new
        memory-mapped file of ``directory``, unlinked once mapped (the
        mapping keeps it until the tensor goes)."""
        span = 1 + sum((size - 1) * stride for size, stride in zip(
            tensor.shape, tensor.stride())) if tensor.numel() else 0
        nbytes = span * tensor.element_size()
        if nbytes == 0:  # nothing to keep (a file cannot map 0 bytes)
            return torch.empty_strided(
                tensor.size(), tensor.stride(), dtype=tensor.dtype)
        handle, path = tempfile.mkstemp(
            prefix='auglocal_offload_', dir=self.directory)
        try:
            os.ftruncate(handle, nbytes)
            storage = torch.UntypedStorage.from_file(
                path, shared=True, nbytes=nbytes)
        except BaseException:
            os.close(handle)
            raise
        finally:
            os.unlink(path)
        host = torch.empty(
            0, dtype=tensor.dtype).set_(storage, 0, tensor.size(),
                                        tensor.stride())
        # the descriptor lives as long as the host copy: copies go through
        # it (read and write, several times faster than faulting the
        # mapping page by page; the page cache is the mapping's, so both
        # see the same bytes)
        if not hasattr(os, 'preadv'):  # copies fault the mapping in
            os.close(handle)
            handle = None
        host._offload_file = _File(handle)
        return host



class _File:
    """The open descriptor of an unlinked file holding one host copy,
    closed when the copy goes."""

    def __init__(self, fd: Optional[int]) -> None:
        #: None where copies go through the mapping (no ``os.preadv``)
        self.fd = fd

    def __del__(self, _close=os.close) -> None:
        # os.close bound at definition: still there at interpreter exit
        if self.fd is not None:
            _close(self.fd)
            self.fd = None

    def read_into(self, tensor: torch.Tensor) -> None:
        """Fill ``tensor``'s storage with the file's bytes."""
        view = _bytes(tensor)
        done = 0
        while done < len(view):
            count = os.preadv(self.fd, [view[done:]], done)
            if count <= 0:
                raise OSError(f'HostOffload: a host file ended after '
                              f'{done} of {len(view)} bytes')
            done += count

    def write_from(self, tensor: torch.Tensor) -> None:
        """Write ``tensor``'s storage into the file."""
        view = _bytes(tensor)
        done = 0
        while done < len(view):
            done += os.pwrite(self.fd, view[done:], done)


def _bytes(tensor: torch.Tensor):
    """The bytes of ``tensor``'s storage, as a buffer sharing them."""
    data = torch.empty(0, dtype=torch.uint8).set_(tensor.untyped_storage())
    return memoryview(data.numpy())


def _same_bytes(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether the storages of ``a`` and ``b`` (on the CPU) hold the same
    elements at the same bytes (same strides, both at the start of
    storages of the same size), so that a byte copy of one storage into
    the other copies the tensor."""
    return (a.device.type == b.device.type == 'cpu' and a.dtype == b.dtype
            and a.shape == b.shape and a.stride() == b.stride()
            and a.storage_offset() == b.storage_offset() == 0
            and a.untyped_storage().nbytes() ==
            b.untyped_storage().nbytes())


def _madvise():
    """libc's ``madvise`` (None where there is none)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.madvise
    except (AttributeError, OSError):
        return None
    function.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    function.restype = ctypes.c_int
    return function


_MADVISE = _madvise() if hasattr(mmap, 'MADV_DONTNEED') else None


def _drop_pages(host: torch.Tensor) -> None:
    """Drop the pages of a file-backed host copy (only such a one: on
    anonymous memory this would zero it) from the process: its
    data stay in the file (a shared mapping, so the kernel keeps what was
    written) and come back on the next read. Where ``madvise`` does not
    exist the pages stay (the data are the same either way)."""
    if _MADVISE is None:
        return
    storage = host.untyped_storage()
    if storage.nbytes() == 0:
        return
    # the mapping starts on a page boundary; the kernel rounds the length
    if _MADVISE(storage.data_ptr(), storage.nbytes(),
                mmap.MADV_DONTNEED) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f'madvise(MADV_DONTNEED): {os.strerror(err)}')
