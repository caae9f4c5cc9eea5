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
memory-mapped file whose pages are dropped from the process after every
copy (:class:`~.host_storage.MappedFileStorage`). The data are the same
bytes, so the updates stay the same bit for bit.

What moves: a module's parameters and buffers (BatchNorm's running
statistics are updated by its forward), and the optimizer state tensors of
its parameters that have the parameter's shape (momentum, Adam's moments).
Scalar state such as Adam's ``step`` stays where the optimizer keeps it.
Tensors are moved by assigning ``Tensor.data``, so parameters, buffers and
state entries keep their identity (the optimizer's state stays keyed by the
same parameters).

:class:`HostOffload` attaches to a training iteration as the data-parallel
wrapper does: for the iteration (:meth:`HostOffload.training`) it
registers a grads-final hook on the optimizer wrapper, after the per-layer
update, that sends each updated head back. The classifier builds it from
``model.aux_head_offload`` (registry ``AUX_HEAD_PLACEMENTS``) and calls
it, as its :class:`~auglocal_det.local_protocol.AuxHeadPlacement`, before
each head's loss and around each head's prediction.
"""
import weakref
from contextlib import contextmanager, nullcontext
from typing import (
    Any,
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

from auglocal_det.engine.optim_wrappers import LayerwiseLocalOptimWrapper
from auglocal_det.errors import InputError
from auglocal_det.local_protocol import AuxHeadPlacement
from auglocal_det.registry import AUX_HEAD_PLACEMENTS

from .host_storage import HostMemoryStorage, MappedFileStorage

__all__ = ['HostOffload']


@AUX_HEAD_PLACEMENTS.register_module()
class HostOffload(AuxHeadPlacement):
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
        if host == 'file':
            self.storage = MappedFileStorage(directory, pin_memory)
        elif directory is not None:
            raise ValueError(
                f"directory={directory!r} is for host='file' (the "
                f'heads in files); host={host!r} rests them in memory')
        else:
            self.storage = HostMemoryStorage(host, pin_memory)
        #: whether the host copies are memory-mapped files
        self.in_files = self.storage.in_files
        self.host = self.storage.host
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
        #: the optimizer of the training iteration in progress
        self._optimizer: Optional[Optimizer] = None
        #: ids of the optimizers whose state dicts wait for the copies
        self._hooked: Set[int] = set()

    # --------------------------------------------------- the plug-in
    @contextmanager
    def training(self, optim_wrapper: Any) -> Iterator[None]:
        """One training iteration with the heads at rest in host memory.

        Each head goes back once the per-layer update of its module is
        made (a grads-final hook, after the update's). After a failed
        iteration the resident heads drop their gradients and go back.

        Args:
            optim_wrapper (LayerwiseLocalOptimWrapper): The wrapper.

        Raises:
            InputError: If the wrapper does not update module by module,
                or the optimizer keeps state that must stay on the device.
        """
        if not isinstance(optim_wrapper, LayerwiseLocalOptimWrapper):
            raise InputError(
                'model.aux_head_offload sends each auxiliary head back to '
                'host memory right after its update, so it needs the '
                "per-layer step: optim_wrapper.type='"
                "LayerwiseLocalOptimWrapper' (or "
                f"'AmpLayerwiseLocalOptimWrapper'), got "
                f'{type(optim_wrapper).__name__}')
        optimizer = optim_wrapper.optimizer
        self._check_optimizer(optimizer)
        self.release_all(optimizer)
        self._optimizer = optimizer
        try:
            with optim_wrapper.grads_final_hook(
                    lambda params: self.release_params(params, optimizer)):
                yield
        except BaseException:
            self.abandon(optimizer)
            raise
        else:
            self.release_all(optimizer)
        finally:
            self._optimizer = None

    def before_loss(self, index: int, device: torch.device) -> None:
        """Bring head ``index`` in (with its optimizer state in training)
        and start bringing in the next one."""
        self.fetch(index, device, self._optimizer)
        self.prefetch(index + 1, device, self._optimizer)

    @contextmanager
    def for_prediction(self, index: int,
                       device: torch.device) -> Iterator[None]:
        """Head ``index`` on ``device`` for a prediction, then back."""
        self.fetch(index, device)
        yield
        self.release(index)

    def _check_optimizer(self, optimizer: Optimizer) -> None:
        """Refuse optimizers whose scalar state must sit on the compute
        device, and make the optimizer's state dict wait for the copies
        in flight (once per optimizer)."""
        if id(optimizer) in self._hooked:
            return
        for key in ('fused', 'capturable'):
            if any(group.get(key) for group in optimizer.param_groups):
                raise InputError(
                    f'model.aux_head_offload cannot keep the state of a '
                    f'{key} {type(optimizer).__name__} in host memory (its '
                    'step counts must stay on the compute device); set '
                    f'optim_wrapper.optimizer.{key}=False or '
                    'model.aux_head_offload=None')
        optimizer.register_state_dict_pre_hook(lambda _: self.synchronize())
        optimizer.register_load_state_dict_pre_hook(
            lambda *_: self.synchronize())
        self._hooked.add(id(optimizer))

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
            self.storage.copy(moved, tensor.data,
                              self._get_host(tensor) if at_rest else None,
                              non_blocking=True)
        tensor.data = moved

    def _send_back(self, tensor: torch.Tensor,
                   stream: Optional['torch.cuda.Stream']) -> None:
        """Copy ``tensor`` into its host copy and let it point there."""
        if self._at_rest(tensor):
            return
        self._check_device(tensor.device)
        pin = self.storage.pin(tensor.device)
        # a dry run on the meta device keeps shapes only: its host copies
        # are meta tensors too (a tensor cannot point from meta to host)
        host_device = tensor.device if tensor.device.type == 'meta' \
            else self.host
        host = self._get_host(tensor)
        if host is None or host.shape != tensor.shape \
                or host.stride() != tensor.stride() \
                or host.dtype != tensor.dtype:
            if (tensor.device == host_device
                    and not self.storage.keeps_in_file(tensor, host_device)
                    and (not pin or tensor.is_pinned())):
                # host memory already (a tensor that never moved, or a
                # state tensor created there): it becomes the host copy
                self._set_host(tensor, tensor.data)
                return
            host = self.storage.new_copy(tensor, host_device, pin)
            self._set_host(tensor, host)
        if tensor.device.type != 'meta':
            self.storage.copy(host, tensor.data, host,
                              non_blocking=stream is not None)
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
