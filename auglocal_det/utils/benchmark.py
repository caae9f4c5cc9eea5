"""Helpers of ``tools/analysis_tools/benchmark.py``.

:class:`MetaMemoryTracker` answers "how much memory would this training
step need" without computing it: the model and the batch live on PyTorch's
``meta`` device, where every operator only produces tensors of the right
shape and dtype, so a ResNet-34 step at batch 128 and 224x224 takes seconds
on any machine. It counts live tensor storages by the same rules as
:class:`~auglocal_det.utils.memory.LiveTensorTracker` (which cannot see meta
tensors: it tells storages apart by their data pointers, and meta storages
have none): a storage is counted once, from the operator that created it
until its last tensor dies; the outputs of views and in-place operators
share an input's storage and add nothing; parameters, buffers, gradients
and optimizer state alive at the start form the baseline. On a CPU the two
trackers agree (see the tests), so the meta figures extend the CPU ones to
batch sizes that would take hours to run.
"""
import weakref
from typing import Dict, Iterable, Set, Union

import torch
import torch.nn as nn
from torch.optim import Optimizer
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = ['MetaMemoryTracker']


def _tensors(tree) -> Iterable[torch.Tensor]:
    return (v for v in tree_flatten(tree)[0] if isinstance(v, torch.Tensor))


def _key(storage: torch.UntypedStorage) -> int:
    # the address of the C++ storage: unique among live storages, also on
    # the meta device (whose data pointers are all 0)
    return storage._cdata


class MetaMemoryTracker(TorchDispatchMode):
    """Peak of live tensor bytes in a ``with`` block, on any device.

    Args:
        modules (nn.Module | Iterable[nn.Module]): Modules whose parameters,
            buffers and gradients form the baseline.
        optimizers (Optimizer | Iterable[Optimizer]): Optimizers whose state
            is part of the baseline. Defaults to ().

    Attributes:
        baseline_bytes (int): Live bytes when the block started.
        peak_bytes (int): Largest live bytes in the block.
        end_bytes (int): Live bytes when the block ended.

    Examples:
        >>> with torch.device('meta'):
        ...     model = build_model()
        >>> with MetaMemoryTracker(model, optimizer) as tracker:
        ...     model.train_step(data, optim_wrapper)
        >>> tracker.peak_bytes
    """

    def __init__(self,
                 modules: Union[nn.Module, Iterable[nn.Module]],
                 optimizers: Union[Optimizer, Iterable[Optimizer]] = ()
                 ) -> None:
        super().__init__()
        self.modules = [modules] if isinstance(modules,
                                               nn.Module) else list(modules)
        self.optimizers = ([optimizers] if isinstance(optimizers, Optimizer)
                           else list(optimizers))
        self.baseline_bytes = 0
        self.peak_bytes = 0
        self.end_bytes = 0
        self._live: Dict[int, int] = {}
        self._finalizers: Dict[int, weakref.finalize] = {}
        self._total = 0

    def _add(self, tensor: torch.Tensor) -> None:
        try:
            storage = tensor.untyped_storage()
        except (RuntimeError, NotImplementedError):  # sparse, functional
            return
        key = _key(storage)
        if key in self._live:
            return
        nbytes = storage.nbytes()
        if nbytes == 0:
            return
        self._live[key] = nbytes
        self._total += nbytes
        self.peak_bytes = max(self.peak_bytes, self._total)
        self._finalizers[key] = weakref.finalize(storage, self._drop, key)

    def _drop(self, key: int) -> None:
        self._finalizers.pop(key, None)
        self._total -= self._live.pop(key, 0)

    def _state_tensors(self) -> Iterable[torch.Tensor]:
        for module in self.modules:
            for param in module.parameters():
                yield param
                if param.grad is not None:
                    yield param.grad
            yield from module.buffers()
        for optimizer in self.optimizers:
            for state in optimizer.state.values():
                yield from _tensors(state)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs: Set[int] = set()
        for value in _tensors((args, kwargs)):
            try:
                inputs.add(_key(value.untyped_storage()))
            except (RuntimeError, NotImplementedError):
                pass
        for value in _tensors(out):
            try:
                aliased = _key(value.untyped_storage()) in inputs
            except (RuntimeError, NotImplementedError):
                continue
            if not aliased:
                self._add(value)
        return out

    def __enter__(self) -> 'MetaMemoryTracker':
        self._live.clear()
        self._finalizers.clear()
        self._total = 0
        for tensor in self._state_tensors():
            self._add(tensor)
        self.baseline_bytes = self.peak_bytes = self._total
        return super().__enter__()

    def __exit__(self, exc_type, exc_val, exc_tb) -> None:
        super().__exit__(exc_type, exc_val, exc_tb)
        self.end_bytes = self._total
        for finalizer in self._finalizers.values():
            finalizer.detach()
        self._finalizers.clear()
        self._live.clear()
