"""Optimizer wrappers that update each local module as soon as it can.

In local learning the gradient of local module j is final as soon as the
backward of its local loss returns: no later loss reaches its parameters.
:class:`LocalOptimWrapper` nevertheless keeps every gradient until the one
optimizer step at the end of the iteration, so the gradients of the whole
network and of all its auxiliary networks are alive together, and the step
itself (a multi-tensor update) allocates temporaries as large as all of
them. The wrappers here apply module j's update right after its backward
and free its gradients (``param.grad = None``), so in one process at most
one module's gradients exist at any time (under data parallelism, those
of the modules whose all-reduce is still running).

The result is the same as with :class:`LocalOptimWrapper` whenever the
update of a parameter depends only on its own gradient and optimizer state
(SGD with momentum, Nesterov and weight decay, Adam, AdamW, RMSprop, ...),
which is why two settings are refused:

- ``clip_grad`` with a norm over all parameters: the norm needs every
  gradient of the iteration before the first update (clipping by value is
  element-wise and is applied per module);
- ``accumulative_counts > 1``: accumulation keeps gradients across
  iterations by definition.

Under data-parallel training (``LocalDistributedDataParallel``) a gradient
is final only after its all-reduce: the update is then a grads-final hook
that the data-parallel wrapper's reducer triggers once the module's bucket
is reduced, so it is the update of the averaged gradient, as in the one
step of :class:`LocalOptimWrapper`.
"""
import logging
from typing import Dict, Iterable, List, Optional, Tuple

import torch
import torch.nn as nn
from mmengine.dist import get_world_size
from mmengine.logging import print_log
from torch.optim import Optimizer

from auglocal_det.errors import InputError
from auglocal_det.registry import OPTIM_WRAPPERS

from .local_optim_wrapper import AmpLocalOptimWrapper, LocalOptimWrapper

__all__ = ['LayerwiseLocalOptimWrapper', 'AmpLayerwiseLocalOptimWrapper']


class _SubsetOptimizer:
    """An optimizer of the same class over some of the parameters.

    It is a real optimizer (of the main optimizer's class, with its
    defaults) whose groups hold the subset's parameters of the main groups,
    in their order, and which shares the main optimizer's ``state``: the
    momentum buffers, step counts and so on of a parameter are the same
    objects in both. :meth:`sync` copies the main groups' hyper-parameters
    (learning rate, momentum, ... as the schedulers left them) and the
    state reference (``load_state_dict`` replaces it) before every step, so
    one step of the subset equals the main optimizer's step restricted to
    these parameters. The main optimizer is never modified.

    Args:
        optimizer (Optimizer): The main optimizer.
        params (Iterable[Parameter]): The parameters of the subset.
    """

    def __init__(self, optimizer: Optimizer,
                 params: Iterable[nn.Parameter]) -> None:
        self.main = optimizer
        ids = frozenset(id(p) for p in params)
        #: (index of the main group, parameters of the subset in it)
        self.groups: List[Tuple[int, List[nn.Parameter]]] = [
            (i, [p for p in group['params'] if id(p) in ids])
            for i, group in enumerate(optimizer.param_groups)
        ]
        self.groups = [(i, ps) for i, ps in self.groups if ps]
        # the class's own __init__ only validates its arguments before
        # Optimizer.__init__, which builds the groups from the defaults
        self.optimizer = type(optimizer).__new__(type(optimizer))
        Optimizer.__init__(self.optimizer,
                           [dict(params=ps) for _, ps in self.groups],
                           dict(optimizer.defaults))
        for name in ('_step_supports_amp_scaling', ):
            if hasattr(optimizer, name):
                setattr(self.optimizer, name, getattr(optimizer, name))

    def sync(self) -> Optimizer:
        """Copy the main hyper-parameters and state; return the optimizer.
        """
        for (index, _), group in zip(self.groups,
                                     self.optimizer.param_groups):
            main_group = self.main.param_groups[index]
            group.update(
                {k: v
                 for k, v in main_group.items() if k != 'params'})
        self.optimizer.state = self.main.state
        return self.optimizer


@OPTIM_WRAPPERS.register_module()
class LayerwiseLocalOptimWrapper(LocalOptimWrapper):
    """:class:`LocalOptimWrapper` that steps every local module right after
    its backward and frees its gradients.

    The model reports, with each :meth:`backward`, the parameters whose
    gradients that loss made final (``LocalImageClassifier.train_step``
    passes a module's parameters and its head's). The per-module update is
    a grads-final hook of this wrapper, registered at construction, so it
    runs right after the backward in one process, and, under
    ``LocalDistributedDataParallel``, as soon as the module's gradient
    all-reduce has finished (the update is then that of the averaged
    gradients, as the one step of :class:`LocalOptimWrapper` would make
    it). Parameters never reported are updated by
    the usual step in :meth:`finish_iteration`, so a model that reports
    nothing trains exactly as with :class:`LocalOptimWrapper` (without the
    memory saving).

    Each update is one step of an optimizer of the same class restricted to
    the module's parameters and sharing the main optimizer's state (K steps
    per iteration, so per-call overhead grows a little); learning-rate
    schedules, which change ``param_groups`` between iterations, apply
    unchanged.

    Args:
        optimizer (Optimizer): Optimizer of all trainable parameters. Its
            update of a parameter must depend only on that parameter's
            gradient and state (true for SGD, Adam, AdamW, RMSprop, ...).
        accumulative_counts (int): Must be 1: accumulated gradients are by
            definition kept across iterations. Defaults to 1.
        clip_grad (dict, optional): Only ``dict(type='value',
            clip_value=...)``, applied to each module's gradients before its
            update. A norm over all parameters is refused. Defaults to None.
        **kwargs: Passed on to the next class in the method resolution
            order (the AMP arguments of
            :class:`AmpLayerwiseLocalOptimWrapper`).

    Examples:
        >>> optim_wrapper = LayerwiseLocalOptimWrapper(
        ...     torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
        >>> model.train_step(data, optim_wrapper)  # K updates, K frees
    """

    def __init__(self,
                 optimizer: Optimizer,
                 accumulative_counts: int = 1,
                 clip_grad: Optional[dict] = None,
                 **kwargs) -> None:
        if accumulative_counts != 1:
            raise InputError(
                f'{type(self).__name__} updates each module in the '
                'iteration that computed its gradient and frees the '
                'gradient at once, so gradients cannot be accumulated over '
                f'{accumulative_counts} iterations '
                '(optim_wrapper.accumulative_counts); use LocalOptimWrapper '
                'for accumulative_counts > 1')
        if clip_grad is not None and clip_grad.get('type', 'norm') != 'value':
            raise InputError(
                f'{type(self).__name__} cannot clip by a norm over all '
                'parameters (optim_wrapper.clip_grad): the norm needs every '
                'gradient of the iteration, but the first modules are '
                'updated before the last gradients exist. Use '
                "clip_grad=dict(type='value', ...) (element-wise, applied "
                'per module) or LocalOptimWrapper')
        super().__init__(
            optimizer=optimizer,
            accumulative_counts=accumulative_counts,
            clip_grad=clip_grad,
            **kwargs)
        self._subsets: Dict[Tuple[int, ...], _SubsetOptimizer] = {}
        self._num_checked = 0
        # the update is the first grads-final hook: it sees the gradients
        # once they are final and, under data parallelism, averaged
        self.grads_final_hook(self.update_module)

    # -------------------------------------------------------------- update
    def update_module(self, params: Iterable[nn.Parameter]) -> None:
        """Update ``params`` now and free their gradients.

        The grads-final hook of this wrapper: :meth:`grads_final` calls it
        with the parameters whose gradients are final (and averaged over
        the processes). Parameters without a gradient are skipped.

        Args:
            params (Iterable[Parameter]): The parameters.
        """
        params = [p for p in params if p.grad is not None]
        if not params:
            return
        if self._update_is_finite(params):
            key = tuple(id(p) for p in params)
            subset = self._subsets.get(key)
            if subset is None:
                subset = self._subsets[key] = _SubsetOptimizer(
                    self.optimizer, params)
            self._step_subset(subset.sync(), params)
        for param in params:
            param.grad = None

    def _update_is_finite(self, params: List[nn.Parameter]) -> bool:
        """Whether to update ``params`` (see :meth:`_losses_finite`).

        Under data-parallel training every process decides alike, from the
        averaged gradients (a non-finite loss anywhere makes them
        non-finite everywhere); in one process, from the losses.
        """
        if get_world_size() > 1:
            self._num_checked = len(self._finite_flags)
            if not self.check_finite:
                return True
            finite = bool(
                torch.stack([torch.isfinite(p.grad).all()
                             for p in params]).all())
            if not finite:
                print_log(
                    f'{type(self).__name__}: non-finite averaged gradients '
                    f'of {len(params)} parameters at iteration '
                    f'{self._inner_count + 1}; their update is skipped on '
                    'every process', logger='current', level=logging.WARNING)
            return finite
        return self._losses_finite()

    def _losses_finite(self) -> bool:
        """Whether the losses back-propagated since the last update are
        finite (always True with ``check_finite=False``).

        :meth:`finish_iteration` raises on a non-finite loss, as
        :class:`LocalOptimWrapper` does, but only after the modules before
        it were updated; the module whose loss is not finite is not.
        """
        flags = self._finite_flags[self._num_checked:]
        self._num_checked += len(flags)
        if not self.check_finite or not flags:
            return True
        return bool(torch.stack([ok for _, ok in flags]).all())

    def _step_subset(self, optimizer: Optimizer,
                     params: List[nn.Parameter]) -> None:
        """Clip (by value) and update one group of parameters."""
        if self.clip_grad_kwargs:
            self.clip_func(params, **self.clip_grad_kwargs)
        optimizer.step()

    def _remaining(self) -> List[nn.Parameter]:
        return [
            p for group in self.optimizer.param_groups
            for p in group['params'] if p.grad is not None
        ]

    def step(self, **kwargs) -> None:
        """Update the parameters not yet updated in this iteration.

        Args:
            **kwargs: Must be empty (kept for the signature of
                :meth:`OptimWrapper.step`).
        """
        if kwargs:
            raise TypeError(f'{type(self).__name__}.step() takes no '
                            f'arguments, got {sorted(kwargs)}')
        remaining = self._remaining()
        if remaining:
            self._step_subset(
                _SubsetOptimizer(self.optimizer, remaining).sync(),
                remaining)

    def finish_iteration(self,
                         step_kwargs: Optional[Dict] = None,
                         zero_kwargs: Optional[Dict] = None) -> bool:
        """End the iteration: update what was not updated yet, zero_grad.

        Args:
            step_kwargs (dict, optional): Arguments of :meth:`step`.
            zero_kwargs (dict, optional): Arguments of :meth:`zero_grad`.

        Returns:
            bool: Always True (there is no accumulation).
        """
        try:
            return super().finish_iteration(step_kwargs, zero_kwargs)
        finally:
            self._num_checked = 0


@OPTIM_WRAPPERS.register_module()
class AmpLayerwiseLocalOptimWrapper(LayerwiseLocalOptimWrapper,
                                    AmpLocalOptimWrapper):
    """Mixed-precision :class:`LayerwiseLocalOptimWrapper`.

    Every backward scales its loss by the current loss scale, as in
    :class:`AmpLocalOptimWrapper`. Each module's update goes through
    ``loss_scaler.step`` on a view of the optimizer restricted to the
    module, which unscales only that module's gradients, checks them for
    infinities and NaNs, and skips the update **of that module only** if
    any is found. The loss scale is updated once per iteration, after the
    last module, from the checks of all modules: it backs off if any module
    overflowed and grows as usual otherwise.

    This is the only correct choice once updates are made module by
    module: skipping every module's update on an overflow, as
    :class:`AmpLocalOptimWrapper` does, would require keeping all gradients
    until the end of the iteration. The two give the same parameters in
    every iteration without overflow; in an iteration with an overflow the
    modules whose gradients are finite are updated here and not there. A
    module's gradient depends only on its own loss and parameters, so an
    overflow in one module says nothing about another module's update.
    With ``dtype='bfloat16'`` no loss scaling is needed at all (pass
    ``loss_scale=1.0``), and the check only guards against non-finite
    gradients.

    Args:
        loss_scale (float | str | dict): ``'dynamic'``, a static scale, or
            the arguments of the gradient scaler. Defaults to ``'dynamic'``.
        dtype (str | torch.dtype, optional): Autocast data type, e.g.
            ``'float16'`` or ``'bfloat16'``. Defaults to None.
        use_fsdp (bool): Use the sharded gradient scaler. Defaults to False.
        **kwargs: Arguments of :class:`LayerwiseLocalOptimWrapper`.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._scaler_stepped = False

    def _update_is_finite(self, params: List[nn.Parameter]) -> bool:
        """Always True: the loss scaler checks every module's gradients
        before its update anyway (a non-finite loss gives non-finite
        gradients), and :meth:`finish_iteration` counts the non-finite
        losses as :class:`AmpLocalOptimWrapper` does."""
        return True

    def _step_subset(self, optimizer: Optimizer,
                     params: List[nn.Parameter]) -> None:
        """Unscale, check, clip (by value) and update one group."""
        if self.clip_grad_kwargs:
            self.loss_scaler.unscale_(optimizer)
            self.clip_func(params, **self.clip_grad_kwargs)
        self.loss_scaler.step(optimizer)
        self._scaler_stepped = True

    def step(self, **kwargs) -> None:
        """Update the remaining parameters, then the loss scale once.

        Args:
            **kwargs: Must be empty.
        """
        super().step(**kwargs)
        if self._scaler_stepped:
            self.loss_scaler.update(self._scale_update_param)
            self._scaler_stepped = False

