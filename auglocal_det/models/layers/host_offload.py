"""Keep modules in host memory between their uses in an iteration.

A local module's auxiliary head is used three times per iteration, one
right after the other: its forward, its backward and (with the per-layer
optimizer step) its update. Between the update and the next iteration's
forward nothing reads its parameters or their optimizer state. With
:class:`HostOffload` they rest in host memory (pinned when the compute
device is a GPU) and only the heads in use, and the next one being brought
in, are on the compute device. AugLocal d = 4's heads for ResNet-34 hold
154.4 M parameters, 7 times the network's own; with momentum that is
1178 MiB of the 1344.5 MiB of parameters and optimizer state.

The copies are exact (``Tensor.copy_``), and forward, backward and update
run on the compute device as without offloading, so the updates are the
same bit for bit. On CUDA the copies run on a side stream: head ``j + 1``
is brought in while module ``j`` computes, and head ``j - 1`` goes back
while module ``j`` computes. Host and compute device may both be the CPU
(the copies are then plain copies); that is how the tests check the
updates.

When the compute device is the CPU, host memory is the same memory, and
``host='file'`` takes the heads out of it instead: each host copy is a
file, created in ``directory`` and unlinked at once, mapped into the
process (``torch.UntypedStorage.from_file``, shared). After every copy in
or out the mapping's pages are dropped from the process
(``madvise(MADV_DONTNEED)``; the kernel keeps the data, written back to
the file, in its page cache, which it may reclaim), so between their uses
the heads are not part of the process's resident memory. The copies
themselves read and write the file through a descriptor kept open with
the copy (``os.preadv``, ``os.pwrite``: the page cache is the mapping's,
so reads of the mapping, such as a checkpoint's, and writes into it, such
as loading a state dict, see the same bytes; a copy through the
descriptor is several times faster than faulting the mapping in page by
page). Copies smaller than ``min_file_bytes`` (BatchNorm's vectors,
biases) stay in memory. The data are the same bytes, so the updates stay
the same bit for bit; the cost is the copy through the page cache and its
write-back to the disk, the heads' parameters and momentum in and out once
per iteration. The directory must be on a disk: on a memory file system
(tmpfs) the files would stay in memory.

What moves: a module's parameters and buffers (BatchNorm's running
statistics are updated by its forward), and the optimizer state tensors of
its parameters that have the parameter's shape (momentum, Adam's moments).
Scalar state such as Adam's ``step`` stays where the optimizer keeps it.
Tensors are moved by assigning ``Tensor.data``, so parameters, buffers and
state entries keep their identity (the optimizer's state stays keyed by the
same parameters).
"""
import ctypes
import mmap
import os
import tempfile
import weakref
from contextlib import nullcontext
from typing import (
    Dict,
    Iterable,
    Iterator,
    List,
    Optional,
    Sequence,
    Set,
    Tuple,
)

import torch
import torch.nn as nn
from torch.optim import Optimizer

from auglocal_det.errors import InputError

__all__ = ['HostOffload']


class HostOffload:
    """Host-memory residence for a list of modules, brought in on demand.

    Args:
        modules (Sequence[nn.Module]): The modules (auxiliary heads), by
            index.
        host (str | torch.device): Where they rest: a device, or
            ``'file'``, memory-mapped files whose pages are dropped from
            the process between uses (for training on the CPU). Defaults
            to ``'cpu'``.
        pin_memory (bool, optional): Allocate the host copies in pinned
            memory, so that copies to and from a GPU can overlap with its
            compute. Defaults to None: when the compute device is CUDA.
        directory (str, optional): Where ``host='file'`` creates its files
            (unlinked as soon as they are mapped). Defaults to None: the
            temporary directory (``TMPDIR``).

    Raises:
        ValueError: If ``directory`` is given without ``host='file'`` or is
            not a writable directory, or if ``host='file'`` is asked for
            pinned memory.

    Examples:
        >>> offload = HostOffload(model.aux_heads)
        >>> offload.fetch(3, torch.device('cuda'), optimizer)  # in
        >>> offload.prefetch(4, torch.device('cuda'), optimizer)
        >>> ...  # forward, backward and update of head 3
        >>> offload.release(3, optimizer)  # back to host memory
        >>> offload.synchronize()  # before reading host copies on the CPU
    """

    def __init__(self,
                 modules: Sequence[nn.Module],
                 host: str = 'cpu',
                 pin_memory: Optional[bool] = None,
                 directory: Optional[str] = None) -> None:
        self.modules = list(modules)
        #: whether the host copies are memory-mapped files
        self.in_files = host == 'file'
        if self.in_files:
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
            self.host = torch.device('cpu')
        else:
            if directory is not None:
                raise ValueError(
                    f"directory={directory!r} is for host='file' (the "
                    f'heads in files); host={host!r} rests them in memory')
            self.host = torch.device(host)
        self.directory = directory
        self.pin_memory = pin_memory
        #: host copies below this size stay in memory with ``host='file'``
        #: (BatchNorm's vectors, biases: a page and a descriptor each for
        #: almost nothing)
        self.min_file_bytes = 1 << 16
        self._index_of: Dict[int, int] = {
            id(p): i
            for i, module in enumerate(self.modules)
            for p in module.parameters()
        }
        #: index -> the device its tensors are on now (absent: at rest)
        self._resident: Dict[int, torch.device] = {}
        #: id of a moved tensor -> (a weak reference to it, its host copy,
        #: reused every iteration); the entry goes when the tensor does
        self._host_copy: Dict[int, Tuple[weakref.ref, torch.Tensor]] = {}
        self._streams: Dict[torch.device, torch.cuda.Stream] = {}
        self._settled = False

    # ------------------------------------------------------------ queries
    @property
    def resident(self) -> Set[int]:
        """set[int]: Indices of the modules on a compute device now."""
        return set(self._resident)

    def index_of(self, params: Iterable[nn.Parameter]) -> Set[int]:
        """Indices of the modules that own some of ``params``."""
        return {
            self._index_of[id(p)]
            for p in params if id(p) in self._index_of
        }

    def host_tensors(self) -> List[torch.Tensor]:
        """The host copies (resting or not), e.g. to leave them out of a
        count of what the compute device holds."""
        return [host for _, host in self._host_copy.values()]

    # -------------------------------------------------------------- moves
    def fetch(self,
              index: int,
              device: torch.device,
              optimizer: Optional[Optimizer] = None) -> None:
        """Make module ``index`` usable on ``device``: bring it in if it is
        not there, and make the compute stream wait for the copies.

        Args:
            index (int): The module.
            device (torch.device): The compute device.
            optimizer (Optimizer, optional): Whose state of the module's
                parameters comes along (training). Defaults to None.
        """
        self.prefetch(index, device, optimizer)
        stream = self._streams.get(device)
        if stream is not None:
            current = torch.cuda.current_stream(device)
            current.wait_stream(stream)
            for tensor in self._tensors(index, optimizer):
                tensor.data.record_stream(current)

    def prefetch(self,
                 index: int,
                 device: torch.device,
                 optimizer: Optional[Optimizer] = None) -> None:
        """Start bringing module ``index`` to ``device`` (on a side stream
        on CUDA, at once elsewhere); :meth:`fetch` waits for it. Indices
        out of range are ignored.

        Args:
            index (int): The module.
            device (torch.device): The compute device.
            optimizer (Optimizer, optional): As in :meth:`fetch`.
        """
        if not 0 <= index < len(self.modules):
            return
        self._check_device(device)
        # resident before the first copy: a copy that fails (out of
        # memory) leaves a module that release() still brings back
        self._resident[index] = device
        with self._on_side_stream(device):
            for tensor in self._tensors(index, optimizer):
                self._bring_in(tensor, device)

    def release(self,
                index: int,
                optimizer: Optional[Optimizer] = None) -> None:
        """Send module ``index`` (and its optimizer state) back to host
        memory.

        Args:
            index (int): The module.
            optimizer (Optimizer, optional): Whose state goes along.

        Raises:
            RuntimeError: If a parameter still has a gradient: only a
                module whose update has been made can rest.
        """
        for param in self.modules[index].parameters():
            if param.grad is not None:
                raise RuntimeError(
                    f'HostOffload: module {index} is released with a '
                    'gradient still alive; it must be updated first (the '
                    'per-layer step frees gradients after the update)')
        device = self._resident.pop(index, None)
        with self._on_side_stream(device) as stream:
            for tensor in self._tensors(index, optimizer):
                self._send_back(tensor, stream)

    def release_params(self,
                       params: Iterable[nn.Parameter],
                       optimizer: Optional[Optimizer] = None) -> None:
        """Release the modules that own some of ``params`` and whose
        parameters are all updated (a grads-final hook after the per-layer
        update; a module whose parameters are reported in several groups,
        e.g. several all-reduce buckets, goes once the last is updated).
        """
        for index in sorted(self.index_of(params)):
            if all(p.grad is None for p in self.modules[index].parameters()):
                self.release(index, optimizer)

    def release_all(self, optimizer: Optional[Optimizer] = None) -> None:
        """Send every module back to host memory: the resident ones, and
        the first time every module (they start wherever the model was
        moved)."""
        indices = sorted(self._resident) if self._settled else range(
            len(self.modules))
        for index in indices:
            self.release(index, optimizer)
        self._settled = True

    def abandon(self, optimizer: Optional[Optimizer] = None) -> None:
        """After a failed iteration: drop the gradients of the resident
        modules (their update will not be made) and release them."""
        for index in sorted(self._resident):
            for param in self.modules[index].parameters():
                param.grad = None
            self.release(index, optimizer)

    def synchronize(self) -> None:
        """Wait for the copies in flight: call before the CPU reads or
        writes the host copies (a checkpoint, loading a state dict; the
        classifier's and the optimizer's state dicts do it themselves)."""
        for stream in self._streams.values():
            stream.synchronize()

    # ------------------------------------------------------------ helpers
    def _state(self, index: int,
               optimizer: Optional[Optimizer]) -> Iterator[torch.Tensor]:
        if optimizer is None:
            return
        for param in self.modules[index].parameters():
            state = optimizer.state.get(param)
            if not state:
                continue
            for value in state.values():
                if (isinstance(value, torch.Tensor)
                        and value.shape == param.shape):
                    yield value

    def _tensors(self, index: int,
                 optimizer: Optional[Optimizer]) -> List[torch.Tensor]:
        module = self.modules[index]
        tensors = list(module.parameters()) + list(module.buffers())
        return tensors + list(self._state(index, optimizer))

    def _get_host(self, tensor: torch.Tensor) -> Optional[torch.Tensor]:
        entry = self._host_copy.get(id(tensor))
        if entry is None or entry[0]() is not tensor:
            return None
        return entry[1]

    def _set_host(self, tensor: torch.Tensor, host: torch.Tensor) -> None:
        key = id(tensor)

        def forget(_, table=self._host_copy, key=key):
            table.pop(key, None)

        self._host_copy[key] = (weakref.ref(tensor, forget), host)

    def _at_rest(self, tensor: torch.Tensor) -> bool:
        host = self._get_host(tensor)
        # the same storage (meta tensors all have data pointer 0)
        return (host is not None and tensor.device == host.device
                and tensor.untyped_storage()._cdata ==
                host.untyped_storage()._cdata)

    def _bring_in(self, tensor: torch.Tensor, device: torch.device) -> None:
        """Give ``tensor`` a copy on ``device`` unless it is there (a
        separate copy also when the host is the device)."""
        at_rest = self._at_rest(tensor)
        if tensor.device == device and not at_rest:
            return
        moved = torch.empty_like(tensor.data, device=device)
        if tensor.device.type != 'meta' and device.type != 'meta':
            _copy(moved, tensor.data,
                  self._get_host(tensor) if at_rest else None,
                  non_blocking=True)
        tensor.data = moved

    def _send_back(self, tensor: torch.Tensor,
                   stream: Optional['torch.cuda.Stream']) -> None:
        """Copy ``tensor`` into its host copy and let it point there."""
        if self._at_rest(tensor):
            return
        self._check_device(tensor.device)
        pin = self._pin(tensor.device)
        # a dry run on the meta device keeps shapes only: its host copies
        # are meta tensors too (a tensor cannot point from meta to host)
        host_device = tensor.device if tensor.device.type == 'meta' \
            else self.host
        host = self._get_host(tensor)
        if host is None or host.shape != tensor.shape \
                or host.stride() != tensor.stride() \
                or host.dtype != tensor.dtype:
            in_file = (self.in_files and host_device.type != 'meta' and
                       tensor.numel() * tensor.element_size() >=
                       self.min_file_bytes)
            if (tensor.device == host_device and not in_file
                    and (not pin or tensor.is_pinned())):
                # host memory already (a tensor that never moved, or a
                # state tensor created there): it becomes the host copy
                self._set_host(tensor, tensor.data)
                return
            if in_file:
                host = self._file_copy(tensor)
            else:
                # the tensor's own strides (channels-last weights stay so)
                host = torch.empty_strided(
                    tensor.size(),
                    tensor.stride(),
                    dtype=tensor.dtype,
                    device=host_device,
                    pin_memory=pin)
            self._set_host(tensor, host)
        if tensor.device.type != 'meta':
            _copy(host, tensor.data, host, non_blocking=stream is not None)
        if stream is not None:  # free the device memory after the copy
            tensor.data.record_stream(stream)
        tensor.data = host

    def _check_device(self, device: torch.device) -> None:
        """Refuse files for a compute device other than the CPU."""
        if self.in_files and device.type not in ('cpu', 'meta'):
            raise InputError(
                "model.aux_head_offload.host='file' rests the heads in "
                f'files for training on the CPU; the model computes on '
                f"{device}, where host='cpu' (pinned host memory) is the "
                'option')

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

    def _pin(self, device: Optional[torch.device]) -> bool:
        if self.pin_memory is not None:
            return self.pin_memory
        return (device is not None and device.type == 'cuda'
                and self.host.type == 'cpu')

    def _on_side_stream(self, device: Optional[torch.device]):
        """The side stream of a CUDA ``device`` as a context that yields
        it (a context yielding None elsewhere).

        The stream first waits for the compute stream: a copy to the host
        must follow the update, a copy in must not overtake the copy out
        of the same tensor (both go through this stream, in order).
        """
        if device is None or device.type != 'cuda':
            return nullcontext()
        stream = self._streams.get(device)
        if stream is None:
            stream = self._streams[device] = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        return _StreamContext(stream)


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


def _copy(dst: torch.Tensor, src: torch.Tensor,
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


class _StreamContext:
    """``torch.cuda.stream(stream)`` that also yields the stream."""

    def __init__(self, stream: torch.cuda.Stream) -> None:
        self.stream = stream
        self._context = torch.cuda.stream(stream)

    def __enter__(self) -> torch.cuda.Stream:
        self._context.__enter__()
        return self.stream

    def __exit__(self, *exc) -> None:
        self._context.__exit__(*exc)
