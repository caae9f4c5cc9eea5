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
  iteration counter does not move.
- :meth:`LocalOptimWrapper.finish_iteration` ends the iteration: it runs the
  pre-step hooks (the distributed wrapper waits for its gradient all-reduce
  there), advances the counter once and, when an update is due, performs
  one ``step`` (gradient clipping over all parameters, one ``scaler.step``
  and one ``scaler.update`` for AMP) and one ``zero_grad``.

:meth:`LocalOptimWrapper.update_params` keeps MMEngine's meaning (one loss,
one backward, one iteration), so end-to-end models and hooks that call it
work unchanged.
"""
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, List, Optional

import torch
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from torch.optim import Optimizer

from auglocal_det.registry import OPTIM_WRAPPERS

PreStepHook = Callable[[], None]


@OPTIM_WRAPPERS.register_module()
class LocalOptimWrapper(OptimWrapper):
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
        **kwargs: Passed on to the next class in the method resolution
            order (the AMP arguments of :class:`AmpLocalOptimWrapper`).

    Examples:
        >>> optim_wrapper = LocalOptimWrapper(
        ...     torch.optim.SGD(model.parameters(), lr=0.1))
        >>> for loss in local_losses:  # computed one after another
        ...     optim_wrapper.backward(loss)
        >>> optim_wrapper.finish_iteration()
    """

    def __init__(self,
                 optimizer: Optimizer,
                 accumulative_counts: int = 1,
                 clip_grad: Optional[dict] = None,
                 **kwargs) -> None:
        super().__init__(
            optimizer=optimizer,
            accumulative_counts=accumulative_counts,
            clip_grad=clip_grad,
            **kwargs)
        self._pre_step_hooks: List[PreStepHook] = []
        self._num_backward = 0

    @property
    def num_backward(self) -> int:
        """int: Backward calls made in the current iteration so far."""
        return self._num_backward

    def backward(self, loss: torch.Tensor, **kwargs) -> None:
        """Back-propagate one of the iteration's losses.

        The loss is divided by the accumulation factor of the current
        iteration (see :meth:`scale_loss`); the iteration counter is not
        advanced. Call :meth:`finish_iteration` once after the last loss.

        Args:
            loss (Tensor): A scalar loss.
            **kwargs: Passed to :meth:`torch.Tensor.backward`.
        """
        self._backward_scaled(self.scale_loss(loss), **kwargs)
        self._num_backward += 1

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
        for hook in list(self._pre_step_hooks):
            hook()
        self._inner_count += 1
        self._num_backward = 0
        if not self.should_update():
            return False
        self.step(**(step_kwargs or {}))
        self.zero_grad(**(zero_kwargs or {}))
        return True

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

    @contextmanager
    def pre_step_hook(self, hook: PreStepHook) -> Iterator[None]:
        """Call ``hook()`` in every :meth:`finish_iteration` of the context.

        The hook runs before the counter advances and before the step, also
        in iterations that only accumulate gradients.
        ``LocalDistributedDataParallel`` uses it to wait for its gradient
        all-reduce.

        Args:
            hook (callable): Function without arguments.
        """
        self._pre_step_hooks.append(hook)
        try:
            yield
        finally:
            self._pre_step_hooks.remove(hook)


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
