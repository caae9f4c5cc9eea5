"""Optimizer wrappers for training with several backward passes per step.

A locally trained network calls ``backward`` once per local module (K times
per iteration) and steps the optimizer once. MMEngine's
:class:`~mmengine.optim.OptimWrapper` counts every ``backward`` call as one
iteration, so using it K times per step would divide the loss by the wrong
accumulation factor, step the optimizer K times and update the AMP loss
scale K times. The wrappers here separate the two:

- :meth:`LocalOptimWrapper.backward` may be called any number of times in an
  iteration. Each call divides its loss by the gradient-accumulation factor
  of the current iteration (the same factor for every call) and, in
  :class:`AmpLocalOptimWrapper`, multiplies it by the loss scale. The
  iteration counter does not move. The caller passes ``params``, the
  parameters whose gradients this loss made final for the iteration; the
  wrapper hands them to the *gradient reducer* if one is registered
  (:meth:`LocalOptimWrapper.gradient_reducer`: the data-parallel wrapper
  starts their all-reduce), which reports them to
  :meth:`LocalOptimWrapper.grads_final` once they are averaged; without a
  reducer they go there at once. :meth:`LocalOptimWrapper.grads_final`
  calls the *grads-final hooks* (:meth:`LocalOptimWrapper.grads_final_hook`:
  the layer-wise wrapper updates the module there, host offload sends the
  module's head back).
- :meth:`LocalOptimWrapper.finish_iteration` ends the iteration: it runs the
  pre-step hooks (the distributed wrapper waits for its gradient all-reduce
  there), advances the counter once and, when an update is due, performs
  one ``step`` (gradient clipping over all parameters, one ``scaler.step``
  and one ``scaler.update`` for AMP) and one ``zero_grad``. It returns
  whether the parameters were updated.

This is the whole contract between a locally trained model and its
optimizer wrapper. Its declaration,
:class:`~auglocal_det.local_protocol.LocalOptimContract`, and
:func:`~auglocal_det.local_protocol.check_local_optim_wrapper`, where a
model or model wrapper checks that it has it, are in
``auglocal_det/local_protocol.py``, which ``models/`` imports.

:meth:`LocalOptimWrapper.update_params` keeps MMEngine's meaning (one loss,
one backward, one iteration), so end-to-end models and hooks that call it
work unchanged.

Non-finite losses are caught where it costs least: each :meth:`backward`
records ``isfinite(loss)`` on the loss's device (no synchronisation), and
:meth:`finish_iteration` looks at all flags of the iteration at once (one
synchronisation, all-reduced under data parallelism so that every process
decides alike) before the step. Without AMP a non-finite loss stops
training with a :class:`~auglocal_det.errors.TrainingDivergedError` naming
the local module(s) and the iteration; with AMP the loss scaler's own
inf/NaN check skips the update and lowers the scale, and training stops only
if this goes on for ``nonfinite_patience`` consecutive iterations.
"""
import logging
from collections import OrderedDict
from contextlib import contextmanager
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Optional,
    Tuple,
)

import torch
import torch.distributed as dist
from mmengine.dist import get_world_size
from mmengine.logging import print_log
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from torch.optim import Optimizer
from torch.utils.hooks import RemovableHandle

from auglocal_det.errors import TrainingDivergedError
from auglocal_det.local_protocol import (
    GradsFinalHook,
    LocalOptimContract,
)
from auglocal_det.registry import OPTIM_WRAPPERS

__all__ = ['LocalOptimWrapper', 'AmpLocalOptimWrapper']

PreStepHook = Callable[[], None]


@OPTIM_WRAPPERS.register_module()
class LocalOptimWrapper(OptimWrapper, LocalOptimContract):
    """Optimizer wrapper for K backward passes and one step per iteration.

    Use it for every model whose ``train_step`` calls :meth:`backward` more
    than once per iteration (``LocalImageClassifier``). The arguments are
    those of :class:`~mmengine.optim.OptimWrapper`.

    Args:
        optimizer (Optimizer): Optimizer of all trainable parameters (the
            network and its auxiliary heads).
        accumulative_counts (int): Number of iterations whose gradients are
            accumulated before one update. Defaults to 1.
        clip_grad (dict, optional): Arguments of
            :func:`torch.nn.utils.clip_grad_norm_` (or, with
            ``type='value'``, of :func:`torch.nn.utils.clip_grad_value_`).
            Clipping runs once per update, over all parameters. Defaults to
            None.
        check_finite (bool): Check every loss passed to :meth:`backward`
            and stop (or, with AMP, let the loss scaler skip the update) on
            NaN or Inf; see the module docstring. Defaults to True.
        nonfinite_patience (int): With AMP, the number of consecutive
            iterations with a non-finite loss (each update skipped by the
            loss scaler) after which training stops. Defaults to 20.
        **kwargs: Passed on to the next class in the method resolution
            order (the AMP arguments of :class:`AmpLocalOptimWrapper`).

    Examples:
        >>> optim_wrapper = LocalOptimWrapper(
        ...     torch.optim.SGD(model.parameters(), lr=0.1))
        >>> for loss, params in local_losses:  # one after another
        ...     optim_wrapper.backward(loss, params=params)
        >>> optim_wrapper.finish_iteration()
        True
    """

    def __init__(self,
                 optimizer: Optimizer,
                 accumulative_counts: int = 1,
                 clip_grad: Optional[dict] = None,
                 check_finite: bool = True,
                 nonfinite_patience: int = 20,
                 **kwargs) -> None:
        super().__init__(
            optimizer=optimizer,
            accumulative_counts=accumulative_counts,
            clip_grad=clip_grad,
            **kwargs)
        self._pre_step_hooks: Dict[int, PreStepHook] = OrderedDict()
        self._grads_final_hooks: Dict[int, GradsFinalHook] = OrderedDict()
        self._reducers: Dict[int, GradsFinalHook] = OrderedDict()
        self.check_finite = check_finite
        self.nonfinite_patience = nonfinite_patience
        self._finite_flags: List[Tuple[Optional[str], torch.Tensor]] = []
        self._nonfinite_streak = 0
        self._sync_group: Any = None

    def backward(self,
                 loss: torch.Tensor,
                 params: Optional[Iterable[torch.nn.Parameter]] = None,
                 name: Optional[str] = None,
                 **kwargs) -> None:
        """Back-propagate one of the iteration's losses.

        The loss is divided by the accumulation factor of the current
        iteration (see :meth:`scale_loss`); the iteration counter is not
        advanced. A loss that does not require grad (a module without
        trainable parameters) is not back-propagated, but its ``params``
        are still reported. Call :meth:`finish_iteration` once after the
        last loss.

        Args:
            loss (Tensor): A scalar loss.
            params (Iterable[Parameter], optional): The parameters whose
                gradients are final for the iteration once this loss has
                been back-propagated (a local module and its auxiliary
                head). They go to the gradient reducer if one is
                registered (it calls :meth:`grads_final` once they are
                reduced), or straight to :meth:`grads_final`. Defaults to
                None: no hook is called.
            name (str, optional): What the loss trains, e.g. ``'local
                module 3 (layer1.2)'``, named if the loss is not finite.
                Defaults to None.
            **kwargs: Passed to :meth:`torch.Tensor.backward`.
        """
        if self.check_finite:
            self._finite_flags.append(
                (name, torch.isfinite(loss.detach()).all()))
        if loss.requires_grad:
            self._backward_scaled(self.scale_loss(loss), **kwargs)
        if params is not None:
            params = list(params)
            if self._reducers:
                next(iter(self._reducers.values()))(params)
            else:
                if self._grads_final_hooks and get_world_size() > 1:
                    raise RuntimeError(
                        f'{type(self).__name__}: {get_world_size()} '
                        'processes but no gradient reducer, so the '
                        'gradients are not averaged before the per-module '
                        'update; wrap the model in '
                        'LocalDistributedDataParallel (model_wrapper_cfg)')
                self.grads_final(params)

    def grads_final(self, params: List[torch.nn.Parameter]) -> None:
        """Call the grads-final hooks: the gradients of ``params`` are
        final for the iteration and reduced over the processes.

        :meth:`backward` calls it directly without a gradient reducer; a
        reducer (:meth:`gradient_reducer`) calls it when a reduction has
        finished, at the latest in its pre-step hook.

        Args:
            params (list[Parameter]): The parameters.
        """
        for hook in list(self._grads_final_hooks.values()):
            hook(params)

    def _backward_scaled(self, loss: torch.Tensor, **kwargs) -> None:
        """Run autograd on a loss already divided for accumulation."""
        loss.backward(**kwargs)

    def finish_iteration(self,
                         step_kwargs: Optional[Dict] = None,
                         zero_kwargs: Optional[Dict] = None) -> bool:
        """End the iteration: at most one optimizer step and one zero_grad.

        Runs the pre-step hooks, advances the inner counter by one and, when
        :meth:`should_update` holds (every ``accumulative_counts``
        iterations, and at the last iteration), calls :meth:`step` and
        :meth:`zero_grad`.

        Args:
            step_kwargs (dict, optional): Arguments of :meth:`step`.
            zero_kwargs (dict, optional): Arguments of :meth:`zero_grad`.

        Returns:
            bool: Whether the parameters were updated.
        """
        for hook in list(self._pre_step_hooks.values()):
            hook()
        self._check_finite_losses()
        self._inner_count += 1
        if not self.should_update():
            return False
        self.step(**(step_kwargs or {}))
        self.zero_grad(**(zero_kwargs or {}))
        return True

    def _check_finite_losses(self) -> None:
        """Act on the non-finite losses of the iteration, if any.

        Raises:
            TrainingDivergedError: Without AMP, if a loss of the iteration is
                NaN or Inf; with AMP, if that happened in more than
                ``nonfinite_patience`` consecutive iterations.
        """
        flags, self._finite_flags = self._finite_flags, []
        if not flags:
            return
        bad = ~torch.stack([ok for _, ok in flags])
        group = self._sync_group
        if dist.is_available() and dist.is_initialized() and \
                dist.get_world_size(group) > 1:  # the group decides alike
            bad = bad.float()
            dist.all_reduce(bad, op=dist.ReduceOp.MAX, group=group)
            bad = bad > 0
        bad = bad.tolist()  # the one synchronisation per iteration
        names = [
            name or f'loss {i} of the iteration'
            for i, ((name, _), is_bad) in enumerate(zip(flags, bad))
            if is_bad
        ]
        if not names:
            self._nonfinite_streak = 0
            return
        where = (f'non-finite loss (NaN or Inf) in {", ".join(names)} at '
                 f'iteration {self._inner_count + 1}')
        self._nonfinite(where)

    def _nonfinite(self, where: str) -> None:
        """Stop training: a loss of the iteration is not finite.

        Args:
            where (str): Which losses, at which iteration.

        Raises:
            TrainingDivergedError: Always.
        """
        raise TrainingDivergedError(
            f'{where}. Training stopped before the iteration ended, so no '
            'checkpoint holds the result. Lower the learning rate '
            '(optim_wrapper.optimizer.lr), clip gradients (optim_wrapper.'
            'clip_grad) or check the data, then continue from the last '
            'checkpoint with --resume')

    def update_params(  # type: ignore[override]
            self,
            loss: torch.Tensor,
            step_kwargs: Optional[Dict] = None,
            zero_kwargs: Optional[Dict] = None) -> None:
        """One loss, one backward, one iteration (MMEngine's semantics).

        Args:
            loss (Tensor): The loss of the iteration.
            step_kwargs (dict, optional): Arguments of :meth:`step`.
            zero_kwargs (dict, optional): Arguments of :meth:`zero_grad`.
        """
        self.backward(loss)
        self.finish_iteration(step_kwargs, zero_kwargs)

    def pre_step_hook(self, hook: PreStepHook) -> RemovableHandle:
        """Register ``hook()``, called by every :meth:`finish_iteration`.

        The hook runs before the counter advances and before the step, also
        in iterations that only accumulate gradients.
        ``LocalDistributedDataParallel`` waits for its all-reduce there.

        Args:
            hook (callable): Function without arguments.

        Returns:
            RemovableHandle: ``remove()`` unregisters the hook, and so does
            the end of a ``with`` block on it.
        """
        return self._register(self._pre_step_hooks, hook)

    def grads_final_hook(self, hook: GradsFinalHook) -> RemovableHandle:
        """Register ``hook(params)``, called whenever :meth:`grads_final`
        reports ``params`` (their gradients final and reduced).

        ``LayerwiseLocalOptimWrapper`` updates the module there; host
        offload then sends the module's head back. Hooks run in the order
        of registration.

        Args:
            hook (callable): Function of the list of parameters.

        Returns:
            RemovableHandle: As for :meth:`pre_step_hook`.
        """
        return self._register(self._grads_final_hooks, hook)

    def gradient_reducer(self, reducer: GradsFinalHook) -> RemovableHandle:
        """Hand the parameters of every :meth:`backward` to ``reducer``
        instead of :meth:`grads_final`.

        The reducer (``LocalDistributedDataParallel`` registers one per
        iteration) starts averaging their gradients over the processes and
        calls :meth:`grads_final` with them once that has finished, at the
        latest from a pre-step hook. One reducer at a time.

        Args:
            reducer (callable): Function of the list of parameters.

        Returns:
            RemovableHandle: As for :meth:`pre_step_hook`.

        Raises:
            RuntimeError: If a reducer is registered already.
        """
        if self._reducers:
            raise RuntimeError(
                'a gradient reducer is registered already: the model is '
                'wrapped for data-parallel training twice')
        return self._register(self._reducers, reducer)

    @contextmanager
    def sync_group(self, group: Any) -> Iterator[None]:
        """Decide on non-finite losses together with ``group`` only.

        By default all processes of the default group share the decision
        (data parallelism: they run the same losses). A pipeline stage runs
        other losses than the other stages, at another moment: it shares
        the decision with its replicas only.

        Args:
            group (ProcessGroup): The processes that run the same losses.
        """
        previous, self._sync_group = self._sync_group, group
        try:
            yield
        finally:
            self._sync_group = previous

    @staticmethod
    def _register(hooks: Dict[int, Callable],
                  hook: Callable) -> RemovableHandle:
        handle = RemovableHandle(hooks)
        hooks[handle.id] = hook
        return handle


@OPTIM_WRAPPERS.register_module()
class AmpLocalOptimWrapper(LocalOptimWrapper, AmpOptimWrapper):
    """Mixed-precision :class:`LocalOptimWrapper`.

    Every :meth:`backward` call scales its loss by the current loss scale;
    :meth:`finish_iteration` performs one ``scaler.step`` and one
    ``scaler.update`` per update (with gradients unscaled once before
    clipping, if ``clip_grad`` is set). ``optim_context`` enables autocast,
    and the loss scaler is saved and resumed with the optimizer state, as in
    :class:`~mmengine.optim.AmpOptimWrapper`.

    Args:
        loss_scale (float | str | dict): ``'dynamic'``, a static scale, or
            the arguments of the gradient scaler. Defaults to ``'dynamic'``.
        dtype (str | torch.dtype, optional): Autocast data type, e.g.
            ``'float16'`` or ``'bfloat16'``. Defaults to None.
        use_fsdp (bool): Use the sharded gradient scaler. Defaults to False.
        **kwargs: Arguments of :class:`LocalOptimWrapper`.
    """

    def _backward_scaled(self, loss: torch.Tensor, **kwargs) -> None:
        """Run autograd on the loss multiplied by the loss scale."""
        self.loss_scaler.scale(loss).backward(**kwargs)

    def _nonfinite(self, where: str) -> None:
        """Let the loss scaler skip the update of a non-finite iteration,
        unless that has gone on for ``nonfinite_patience`` iterations.

        Args:
            where (str): Which losses, at which iteration.

        Raises:
            TrainingDivergedError: After more than ``nonfinite_patience``
                consecutive iterations with a non-finite loss.
        """
        self._nonfinite_streak += 1
        if self._nonfinite_streak <= self.nonfinite_patience:
            print_log(
                f'{where}: the AMP loss scaler skips this update and '
                f'lowers the loss scale from '
                f'{self.loss_scaler.get_scale():g}',
                logger='current',
                level=logging.WARNING)
            return
        raise TrainingDivergedError(
            f'{where}: {self._nonfinite_streak} consecutive iterations '
            'with a non-finite loss, although the AMP loss scaler '
            f'lowered the loss scale to {self.loss_scaler.get_scale():g}'
            ' (optim_wrapper.nonfinite_patience is '
            f'{self.nonfinite_patience}): '
            'training diverged (this is not an fp16 overflow). Lower '
            'the learning rate (optim_wrapper.optimizer.lr) or clip '
            'gradients (optim_wrapper.clip_grad), then continue from the '
            'last checkpoint with --resume')
