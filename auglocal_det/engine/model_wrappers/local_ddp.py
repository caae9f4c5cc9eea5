"""Data-parallel training of locally trained networks.

PyTorch's ``DistributedDataParallel`` reduces gradients from autograd hooks
during a backward pass and expects one backward per forward. A locally
trained network runs K backward passes per iteration, one per local module,
and MMEngine's ``MMDistributedDataParallel.train_step`` does not even call
the model's own ``train_step``. :class:`LocalDistributedDataParallel`
therefore does not wrap the network in ``DistributedDataParallel``. It
keeps the replicas identical by other means:

1. At construction it broadcasts all parameters and buffers from rank 0.
2. During ``train_step`` it is the optimizer wrapper's gradient reducer
   (:meth:`LocalOptimWrapper.gradient_reducer`). The wrapper calls it
   after every ``backward(loss, params=...)`` with the parameters whose
   gradients that loss made final (``LocalImageClassifier`` passes each
   local module's parameters and its head's). Each call flattens those
   gradients into one bucket and starts an asynchronous all-reduce, which
   runs while the model computes its next modules. A finished bucket's
   averaged gradients are written back and reported to
   :meth:`LocalOptimWrapper.grads_final` (where
   ``LayerwiseLocalOptimWrapper`` updates the module and frees them).
3. Before the optimizer step (a pre-step hook of
   :class:`~auglocal_det.engine.optim_wrappers.LocalOptimWrapper`), it
   reduces any trainable parameter the model has not reported, waits for all
   buckets and writes the averaged gradients back.

Every parameter is therefore reduced exactly once per iteration, the
gradients equal those of single-process training on the global batch
(per-rank losses are means over equally sized per-rank batches), and
BatchNorm statistics stay per process unless the model uses SyncBN.
"""
from collections import OrderedDict
from contextlib import contextmanager
from typing import Any, Dict, Iterable, Iterator, List, Optional, Union

import torch
import torch.distributed as dist
import torch.nn as nn

from auglocal_det.engine.optim_wrappers import (
    LocalOptimWrapper,
    check_local_optim_wrapper,
)
from auglocal_det.errors import InputError
from auglocal_det.models.classifiers import LocalImageClassifier
from auglocal_det.registry import MODEL_WRAPPERS


class _Bucket:
    """One flattened all-reduce in flight.

    The buffer holds the concatenated gradients (zeros for a parameter
    without gradient on this rank), followed by one flag per parameter that
    is 1 where this rank has a gradient; after the all-reduce the flags
    count the ranks that had one.
    """

    def __init__(self, params: List[nn.Parameter],
                 group: Optional[dist.ProcessGroup]) -> None:
        self.params = params
        self.has_grad = [p.grad is not None for p in params]
        pieces = [
            p.grad.detach().reshape(-1) if p.grad is not None else
            torch.zeros(p.numel(), dtype=p.dtype, device=p.device)
            for p in params
        ]
        pieces.append(
            torch.tensor(
                self.has_grad, dtype=params[0].dtype,
                device=params[0].device))
        self.buffer = torch.cat(pieces)
        self.work = dist.all_reduce(self.buffer, group=group, async_op=True)

    def finish(self, world_size: int) -> None:
        """Wait for the reduction and store the mean gradients."""
        self.work.wait()
        numel = sum(p.numel() for p in self.params)
        grads = self.buffer[:numel].div_(world_size)
        flags = self.buffer[numel:]
        offset = 0
        for i, param in enumerate(self.params):
            grad = grads[offset:offset + param.numel()].view_as(param)
            offset += param.numel()
            if self.has_grad[i]:
                param.grad.copy_(grad)
            elif flags[i].item() > 0:  # another rank has a gradient
                param.grad = grad.clone()
            # otherwise no rank has a gradient: it stays None everywhere
        self.buffer = None


@MODEL_WRAPPERS.register_module()
class LocalDistributedDataParallel(nn.Module):
    """Model wrapper for multi-process training of locally trained models.

    Select it in a config with
    ``model_wrapper_cfg=dict(type='LocalDistributedDataParallel')``. The
    wrapped model must implement ``train_step(data, optim_wrapper)`` that
    ends with ``optim_wrapper.finish_iteration()`` (or calls
    ``update_params``), and may pass ``params`` to
    ``optim_wrapper.backward``, which lets the wrapper overlap
    communication with computation. Parameters never reported are reduced
    (synchronously) right before the optimizer step, so correctness does
    not depend on the model reporting them.

    With gradient accumulation, gradients are reduced only in the
    iterations that end with an optimizer step (the accumulated sum is
    reduced once), as ``no_sync`` does for PyTorch's wrapper.

    Args:
        module (nn.Module): The model, already on its device.
        broadcast_buffers (bool): Also broadcast the buffers (e.g.
            BatchNorm running statistics) from rank 0 at the start of every
            training step. Defaults to False: statistics stay per process,
            as with MMEngine's default wrapper.
        process_group (ProcessGroup, optional): Group to reduce over.
            Defaults to None (the default group).
    """

    def __init__(self,
                 module: nn.Module,
                 broadcast_buffers: bool = False,
                 process_group: Optional[dist.ProcessGroup] = None) -> None:
        super().__init__()
        if broadcast_buffers and isinstance(module, LocalImageClassifier) \
                and module.aux_head_offload is not None:
            raise InputError(
                'model_wrapper_cfg.broadcast_buffers=True would broadcast '
                "the auxiliary heads' buffers from host memory "
                '(model.aux_head_offload); set one of them off')
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError(
                'LocalDistributedDataParallel needs an initialised default '
                'process group (launch with --launcher pytorch/slurm)')
        self.module = module
        self.broadcast_buffers = broadcast_buffers
        self.process_group = process_group
        self.world_size = dist.get_world_size(process_group)
        self._src = (0 if process_group is None else
                     dist.get_global_rank(process_group, 0))
        self._param_names: Dict[int, str] = OrderedDict(
            (id(p), name) for name, p in module.named_parameters())
        self._params = {id(p): p for p in module.parameters()}
        self._sync = False
        self._finished = False
        self._reduced: Dict[int, int] = {}
        self._pending: List[_Bucket] = []
        self._optim_wrapper: Optional[LocalOptimWrapper] = None
        self._broadcast(list(module.parameters()) +
                        list(module.buffers()))

    # ------------------------------------------------------- broadcasting
    @torch.no_grad()
    def _broadcast(self, tensors: Iterable[torch.Tensor]) -> None:
        """Broadcast tensors from rank 0, one flat buffer per dtype."""
        groups: Dict[Any, List[torch.Tensor]] = OrderedDict()
        for tensor in tensors:
            key = (tensor.device, tensor.dtype)
            groups.setdefault(key, []).append(tensor)
        for group in groups.values():
            flat = torch.cat([t.detach().reshape(-1) for t in group])
            dist.broadcast(flat, src=self._src, group=self.process_group)
            offset = 0
            for tensor in group:
                tensor.copy_(flat[offset:offset + tensor.numel()].view_as(
                    tensor))
                offset += tensor.numel()

    # ----------------------------------------------------- grad reduction
    def start_reduction(self, params: Iterable[nn.Parameter]) -> None:
        """Start the all-reduce of gradients that are final.

        The gradient reducer this wrapper registers on the optimizer wrapper
        during ``train_step``.

        Args:
            params (Iterable[Parameter]): Parameters of the wrapped model
                whose gradients will not change again this iteration.
                Parameters without ``requires_grad`` are ignored.

        Raises:
            RuntimeError: If a parameter is reported twice in an iteration
                or does not belong to the wrapped model.
        """
        if not self._sync:
            return
        bucket: List[nn.Parameter] = []
        for param in params:
            if not param.requires_grad:
                continue
            key = id(param)
            if key not in self._params:
                raise RuntimeError(
                    'a backward reported a tensor that is not a parameter '
                    'of the wrapped model')
            if key in self._reduced:
                raise RuntimeError(
                    f'parameter {self._param_names[key]!r} was reported as '
                    'final twice in one iteration; report a parameter only '
                    'once its gradient is final')
            self._reduced[key] = 1
            bucket.append(param)
        if bucket:
            self._launch(bucket)
        self._collect(block=False)

    def _launch(self, params: List[nn.Parameter]) -> None:
        """Start one flattened all-reduce (one per device and dtype)."""
        groups: Dict[Any, List[nn.Parameter]] = OrderedDict()
        for param in params:
            groups.setdefault((param.device, param.dtype), []).append(param)
        for group in groups.values():
            self._pending.append(_Bucket(group, self.process_group))

    def _collect(self, block: bool) -> None:
        """Write back finished buckets (all of them when ``block``) and
        report their parameters' gradients final."""
        while self._pending and (block
                                 or self._pending[0].work.is_completed()):
            bucket = self._pending.pop(0)
            bucket.finish(self.world_size)
            self._optim_wrapper.grads_final(bucket.params)

    def _reduce_rest(self) -> None:
        """Pre-step hook: reduce what is left and wait for everything."""
        self._finished = True
        if not self._sync:
            return
        late = [
            p for key, p in self._params.items()
            if p.requires_grad and key not in self._reduced
        ]
        if late:
            for p in late:
                self._reduced[id(p)] = 1
            self._launch(late)
        self._collect(block=True)
        self._sync = False

    @contextmanager
    def _reduction(self, optim_wrapper: LocalOptimWrapper) -> Iterator[None]:
        """Register the hooks for one training iteration."""
        self._sync = optim_wrapper.should_sync()
        self._reduced = {}
        self._pending = []
        self._finished = False
        self._optim_wrapper = optim_wrapper
        try:
            with optim_wrapper.gradient_reducer(self.start_reduction), \
                    optim_wrapper.pre_step_hook(self._reduce_rest):
                yield
        finally:
            pending, self._pending = self._pending, []
            for bucket in pending:  # only after an exception
                bucket.work.wait()
            self._sync = False
            self._optim_wrapper = None
        if not self._finished:
            raise RuntimeError(
                "the model's train_step returned without calling "
                'optim_wrapper.finish_iteration() (or update_params()), so '
                'its gradients were not synchronised')

    # ------------------------------------------------------------- steps
    def train_step(self, data: Union[dict, tuple, list],
                   optim_wrapper: LocalOptimWrapper) -> Dict[str, Any]:
        """Run the model's own ``train_step`` with synchronised gradients.

        Args:
            data (dict | tuple | list): A batch from the dataloader.
            optim_wrapper (LocalOptimWrapper): The optimizer wrapper.

        Returns:
            dict: The log variables returned by the model.
        """
        check_local_optim_wrapper(optim_wrapper,
                                  'LocalDistributedDataParallel')
        if self.broadcast_buffers:
            self._broadcast(list(self.module.buffers()))
        with self._reduction(optim_wrapper):
            return self.module.train_step(data, optim_wrapper)

    def val_step(self, data: Union[dict, tuple, list]) -> list:
        """Delegate to the model's ``val_step``."""
        return self.module.val_step(data)

    def test_step(self, data: Union[dict, tuple, list]) -> list:
        """Delegate to the model's ``test_step``."""
        return self.module.test_step(data)

    def forward(self, *args, **kwargs) -> Any:
        """Call the wrapped model."""
        return self.module(*args, **kwargs)
