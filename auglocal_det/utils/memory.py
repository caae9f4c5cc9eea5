"""Peak memory of a region of code, counted from its live tensors.

On CUDA, ``torch.cuda.max_memory_allocated`` answers "how much memory did
this training step need". On CPU there is no such counter, so
:class:`LiveTensorTracker` counts it from the tensors themselves. A
:class:`~torch.utils._python_dispatch.TorchDispatchMode` sees the outputs of
every operator: forward, autograd's backward and the optimizer step alike.
It records each new tensor storage once, with its size. A weak-reference
finalizer on the storage subtracts it again when the last tensor using it
dies. Views and in-place results share a storage and are not counted again.
Storages are told apart by their C++ storage object, so the same count runs
on PyTorch's ``meta`` device, where operators only produce tensors of the
right shape. A large step is thus counted without computing it, and on a
CPU the meta count equals the real one. Tensors the autograd graph saves
for backward are alive as long as the graph holds them, which is what
distinguishes local learning from back-propagation.

Storages are sorted into four kinds:

- ``param``: parameters and buffers of the tracked modules,
- ``grad``: their ``.grad`` tensors,
- ``optim``: optimizer state (momentum buffers, ...) and the temporaries
  of ``optimizer.step`` (e.g. SGD's weight-decay and Nesterov terms),
- ``other``: everything else created in the region: activations, saved
  tensors, temporaries of the forward and backward passes and of the
  auxiliary heads. Reports call it "activations".

Tensors that exist when the region starts are counted only if they belong
to the first three kinds (the *baseline*); a gradient created during the
region is counted as ``other`` until autograd stores it in ``.grad`` and as
``grad`` from then on.

At the peak the tracker also lists what is alive (``MemoryReport.
peak_trace``): each storage's kind, size, shape, the operator that made it
and the module whose forward was running (or, for tensors of a backward
pass, the last module whose forward ran).

The counts are logical storage sizes: allocator caching, fragmentation and
memory held outside tensors (for instance by the autograd engine's own
bookkeeping or by oneDNN scratch buffers) are not included, and the same
method applies to every training rule. :mod:`auglocal_det.process_memory`
measures the other side, the process's peak resident set on Linux.
"""
import math
import weakref
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

import torch
import torch.nn as nn
from torch.optim import Optimizer
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = ['LiveTensorTracker', 'MemoryReport', 'format_bytes']

KINDS = ('param', 'grad', 'optim', 'other')


def format_bytes(num_bytes: Union[int, float]) -> str:
    """Format a byte count with a binary unit, e.g. ``'12.50 MiB'``."""
    value = float(num_bytes)
    for unit in ('B', 'KiB', 'MiB', 'GiB'):
        if abs(value) < 1024 or unit == 'GiB':
            return f'{value:.2f} {unit}'
        value /= 1024
    return f'{value:.2f} GiB'  # pragma: no cover


@dataclass
class MemoryReport:
    """What :class:`LiveTensorTracker` measured.

    Attributes:
        baseline_bytes (int): Live bytes when the region started
            (parameters, buffers, gradients and optimizer state).
        peak_bytes (int): Largest number of live bytes in the region.
        peak_by_kind (dict): ``peak_bytes`` split into the four kinds, at
            the moment of the peak.
        peak_activation_bytes (int): Largest number of live ``other``
            bytes (activations and temporaries) in the region. It can be
            reached at a different moment from ``peak_bytes``.
        end_bytes (int): Live bytes when the region ended.
        num_storages (int): Storages created in the region.
        peak_trace (list[dict]): What is alive at the peak, grouped by
            kind, module, operator, shape and dtype, largest first: each
            entry has those keys and ``count`` and ``bytes``.
    """
    baseline_bytes: int = 0
    peak_bytes: int = 0
    peak_by_kind: Dict[str, int] = field(default_factory=dict)
    peak_activation_bytes: int = 0
    end_bytes: int = 0
    num_storages: int = 0
    peak_trace: List[Dict[str, Any]] = field(default_factory=list)

    @property
    def peak_state_bytes(self) -> int:
        """int: Parameters, buffers, gradients and optimizer state live at
        the peak."""
        return sum(self.peak_by_kind.get(k, 0) for k in KINDS[:3])

    def summary(self) -> str:
        """One line per figure, for printing."""
        lines = [
            f'peak live tensors     {format_bytes(self.peak_bytes)}',
            '  params+buffers      '
            f'{format_bytes(self.peak_by_kind.get("param", 0))}',
            '  grads               '
            f'{format_bytes(self.peak_by_kind.get("grad", 0))}',
            '  optimizer state     '
            f'{format_bytes(self.peak_by_kind.get("optim", 0))}',
            '  activations/other   '
            f'{format_bytes(self.peak_by_kind.get("other", 0))}',
            'peak activations      '
            f'{format_bytes(self.peak_activation_bytes)}',
        ]
        return '\n'.join(lines)


    def format_trace(self, limit: int = 12) -> str:
        """The largest groups of :attr:`peak_trace`, one per line."""
        lines = []
        for entry in self.peak_trace[:limit]:
            shape = 'x'.join(str(n) for n in entry['shape'])
            lines.append(f'{entry["bytes"] / 2**20:10.1f} MiB  '
                         f'{entry["count"]:>4} x {entry["kind"]:<6}'
                         f'{shape:>20} {entry["op"]:<32} {entry["module"]}')
        return '\n'.join(lines)


class _Record:
    """Book-keeping of one tracked storage."""
    __slots__ = ('nbytes', 'kind', 'born', 'died', 'finalizer', 'origin')

    def __init__(self, nbytes: int, kind: str, born: int,
                 origin: Tuple) -> None:
        self.nbytes = nbytes
        self.kind = kind
        self.born = born
        self.died = math.inf
        self.finalizer: Optional[weakref.finalize] = None
        self.origin = origin


class LiveTensorTracker(TorchDispatchMode):
    """Measure the peak of live tensor bytes inside a ``with`` block.

    Args:
        modules (nn.Module | Iterable[nn.Module], optional): Modules whose
            parameters and buffers (and their gradients) are counted as
            state. Defaults to None.
        optimizers (Optimizer | Iterable[Optimizer], optional): Optimizers
            whose state, and the tensors their ``step`` creates, are
            counted as ``optim``. Defaults to None.
        exclude (Iterable[Tensor], optional): Tensors whose storages are
            not counted, e.g. the host copies of
            :class:`~auglocal_det.models.layers.HostOffload`, to count what
            the compute device holds. Defaults to None.

    Examples:
        >>> tracker = LiveTensorTracker(model, optimizer)
        >>> with tracker:
        ...     model.train_step(data, optim_wrapper)
        >>> print(tracker.report.summary())
        >>> # the same count without computing anything
        >>> with torch.device('meta'):
        ...     model = build_model()

    Note:
        The tracker adds Python overhead to every operator; use it for
        measurements, not for training. It must not be nested with another
        dispatch mode that creates tensors on its own.
    """

    def __init__(
        self,
        modules: Union[nn.Module, Iterable[nn.Module], None] = None,
        optimizers: Union[Optimizer, Iterable[Optimizer], None] = None,
        exclude: Optional[Iterable[torch.Tensor]] = None
    ) -> None:
        super().__init__()
        if isinstance(modules, nn.Module):
            modules = [modules]
        if isinstance(optimizers, Optimizer):
            optimizers = [optimizers]
        self.modules: List[nn.Module] = list(modules or [])
        self.optimizers: List[Optimizer] = list(optimizers or [])
        self.exclude: List[torch.Tensor] = list(exclude or [])
        self._excluded: set = set()
        self.report = MemoryReport()
        self._reset()

    def _reset(self) -> None:
        self._records: Dict[int, _Record] = {}
        self._history: List[_Record] = []
        self._live = dict.fromkeys(KINDS, 0)
        self._clock = 0
        self._peak = 0
        self._peak_time = 0
        self._start_clock = 0
        self._in_step = 0
        self._handles: list = []
        self._module_stack: List[str] = []
        self._last_module = ''
        self._op = ''

    @property
    def live_bytes(self) -> int:
        """int: Bytes of the tracked storages alive right now."""
        return sum(self._live.values())

    # ------------------------------------------------------------ tracking
    @staticmethod
    def _storage(tensor: torch.Tensor) -> Optional[torch.UntypedStorage]:
        if not isinstance(tensor, torch.Tensor):
            return None
        try:
            return tensor.untyped_storage()
        except (RuntimeError, NotImplementedError):  # sparse, functional
            return None

    @staticmethod
    def _key(storage: torch.UntypedStorage) -> int:
        # the address of the C++ storage: unique among live storages, also
        # on the meta device, whose data pointers are all 0
        return storage._cdata

    def _module_label(self) -> str:
        if self._module_stack:
            return self._module_stack[-1]
        if self._last_module:
            return f'after {self._last_module}'
        return ''

    def _track(self,
               tensor: torch.Tensor,
               kind: str,
               allocated: bool = True,
               retag: bool = False) -> None:
        """Count the storage of ``tensor`` if it is not counted yet.

        Args:
            tensor (Tensor): Any tensor.
            kind (str): Kind of a new storage.
            allocated (bool): False if the storage may predate the region
                (the output of a view or in-place operator): it is then
                only updated if already tracked, never added.
            retag (bool): Give an already tracked storage this kind (used
                when a tensor is known to be a gradient or optimizer
                state). Defaults to False.
        """
        storage = self._storage(tensor)
        if storage is None or self._key(storage) in self._excluded:
            return
        key = self._key(storage)
        record = self._records.get(key)
        if record is not None:
            nbytes = storage.nbytes()
            if nbytes != record.nbytes:  # resized in place
                self._add(record.kind, nbytes - record.nbytes)
                record.nbytes = nbytes
            if retag and record.kind != kind:
                self._retag(record, kind)
            return
        if not allocated:
            return
        nbytes = storage.nbytes()
        if nbytes == 0:
            return
        self._clock += 1
        origin = (self._module_label(), self._op or kind,
                  tuple(tensor.shape), str(tensor.dtype).replace('torch.', ''))
        record = _Record(nbytes, kind, self._clock, origin)
        record.finalizer = weakref.finalize(storage, self._release, key)
        self._records[key] = record
        self._history.append(record)
        self._add(kind, nbytes)

    def _add(self, kind: str, nbytes: int) -> None:
        self._live[kind] += nbytes
        total = sum(self._live.values())
        if total > self._peak:
            self._peak = total
            self._peak_time = self._clock

    def _retag(self, record: _Record, kind: str) -> None:
        self._live[record.kind] -= record.nbytes
        self._live[kind] += record.nbytes
        record.kind = kind

    def _release(self, key: int) -> None:
        record = self._records.pop(key, None)
        if record is None:
            return
        self._clock += 1
        record.died = self._clock
        self._live[record.kind] -= record.nbytes

    def _track_state(self) -> None:
        """Count parameters, buffers, gradients and optimizer state."""
        for module in self.modules:
            for param in module.parameters():
                self._track(param, 'param')
                if param.grad is not None:
                    self._track(param.grad, 'grad')
            for buf in module.buffers():
                self._track(buf, 'param')
        for optimizer in self.optimizers:
            for state in optimizer.state.values():
                for value in tree_flatten(state)[0]:
                    if isinstance(value, torch.Tensor):
                        self._track(value, 'optim')

    def _activation_peak(self) -> int:
        """Largest sum of live ``other`` storages over the region.

        Computed afterwards, with every storage's final kind, so a buffer
        that autograd later stores as a ``.grad`` (or the optimizer keeps
        as state) is never counted as an activation.
        """
        events = []
        for record in self._history:
            if record.kind == 'other':
                events.append((record.born, record.nbytes))
                if record.died != math.inf:
                    events.append((record.died, -record.nbytes))
        live = peak = 0
        for _, delta in sorted(events):
            live += delta
            peak = max(peak, live)
        return peak

    def _grad_hook(self, param: torch.Tensor) -> None:
        if param.grad is not None:
            self._track(param.grad, 'grad', retag=True)

    def _step_pre_hook(self, optimizer: Optimizer, *args) -> None:
        self._in_step += 1

    def _step_post_hook(self, optimizer: Optimizer, *args) -> None:
        self._in_step -= 1
        for state in optimizer.state.values():
            for value in tree_flatten(state)[0]:
                if isinstance(value, torch.Tensor):
                    self._track(value, 'optim', retag=True)

    def _enter_module(self, name: str) -> None:
        self._module_stack.append(name)
        self._last_module = name

    def _leave_module(self) -> None:
        if self._module_stack:
            self._module_stack.pop()

    def _peak_trace(self) -> List[Dict[str, Any]]:
        groups: Dict[Tuple, List[int]] = defaultdict(lambda: [0, 0])
        for record in self._history:
            if record.born <= self._peak_time < record.died:
                group = groups[(record.kind, ) + record.origin]
                group[0] += 1
                group[1] += record.nbytes
        trace = [
            dict(kind=kind, module=module, op=op, shape=list(shape),
                 dtype=dtype, count=count, bytes=nbytes)
            for (kind, module, op, shape, dtype), (count, nbytes)
            in groups.items()
        ]
        trace.sort(key=lambda entry: -entry['bytes'])
        return trace

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self._op = func.__name__
        outputs = [
            value for value in tree_flatten(out)[0]
            if isinstance(value, torch.Tensor)
        ]
        if outputs:
            # an output sharing memory with an input is a view or the
            # result of an in-place op, possibly of a tensor created before
            # the region: it allocated nothing
            inputs = set()
            for value in tree_flatten((args, kwargs))[0]:
                storage = self._storage(value)
                if storage is not None:
                    inputs.add(self._key(storage))
            for value in outputs:
                storage = self._storage(value)
                aliased = (
                    storage is not None and self._key(storage) in inputs)
                self._track(
                    value, 'optim' if self._in_step else 'other',
                    allocated=not aliased)
        self._op = ''
        return out

    # ------------------------------------------------------------- context
    def __enter__(self) -> 'LiveTensorTracker':
        self._reset()
        self._excluded = {
            self._key(storage)
            for storage in map(self._storage, self.exclude)
            if storage is not None
        }
        self._track_state()
        self.report = MemoryReport(baseline_bytes=sum(self._live.values()))
        self._start_clock = self._clock
        self._peak = self.report.baseline_bytes
        for module in self.modules:
            for param in module.parameters():
                if param.requires_grad:
                    self._handles.append(
                        param.register_post_accumulate_grad_hook(
                            self._grad_hook))
        for optimizer in self.optimizers:
            self._handles.append(
                optimizer.register_step_pre_hook(self._step_pre_hook))
            self._handles.append(
                optimizer.register_step_post_hook(self._step_post_hook))
        for module in self.modules:
            root = type(module).__name__
            for name, sub in module.named_modules():
                self._handles.append(
                    sub.register_forward_pre_hook(
                        lambda *_, n=name or root: self._enter_module(n)))
                self._handles.append(
                    sub.register_forward_hook(
                        lambda *_: self._leave_module(), always_call=True))
        return super().__enter__()

    def __exit__(self, exc_type, exc_val, exc_tb) -> None:
        super().__exit__(exc_type, exc_val, exc_tb)
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        peak_by_kind = dict.fromkeys(KINDS, 0)
        for record in self._history:
            if record.born <= self._peak_time < record.died:
                peak_by_kind[record.kind] += record.nbytes
        self.report.peak_bytes = self._peak
        self.report.peak_by_kind = peak_by_kind
        self.report.peak_activation_bytes = self._activation_peak()
        self.report.peak_trace = self._peak_trace()
        self.report.end_bytes = sum(self._live.values())
        self.report.num_storages = sum(
            1 for r in self._history if r.born > self._start_clock)
        for record in self._history:
            if record.finalizer is not None:
                record.finalizer.detach()
                record.finalizer = None
        self._records.clear()
        self._history.clear()
