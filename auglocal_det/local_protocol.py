"""The contract between a locally trained model and what drives it.

A locally trained model back-propagates one loss per local module and
steps once per iteration. Two kinds of objects take part in that
iteration besides the model, and this module declares what the model may
ask of each, in torch terms only, so that ``models/`` depends on nothing
in ``engine/`` (which implements them):

- :class:`LocalOptimContract`, what a local optimizer wrapper provides:
  ``backward(loss, params=...)`` once per local loss, ``grads_final_hook``
  and ``finish_iteration()``. ``engine/optim_wrappers`` implements it.
- :class:`AuxHeadPlacement`, where the auxiliary heads are between their
  uses. The default keeps them where the model is; host offload
  (``model.aux_head_offload``, ``engine/offload``) is the other
  implementation.
"""
from contextlib import contextmanager, nullcontext
from typing import Any, Callable, ContextManager, Iterable, Iterator, List

import torch

from auglocal_det.errors import InputTypeError

__all__ = [
    'AuxHeadPlacement', 'GradsFinalHook', 'LocalOptimContract',
    'check_local_optim_wrapper'
]

#: A function of the parameters whose gradients are final.
GradsFinalHook = Callable[[List[torch.nn.Parameter]], None]


class LocalOptimContract:
    """What a local model asks of its optimizer wrapper.

    A base class that declares the capability: a wrapper derived from it
    takes several losses per iteration and steps once. The methods are
    implemented by ``LocalOptimWrapper``.
    """

    def backward(self,
                 loss: torch.Tensor,
                 params: Iterable[torch.nn.Parameter] = None,
                 name: str = None,
                 **kwargs) -> None:
        """Back-propagate one local loss; ``params`` are then final."""
        raise NotImplementedError

    def grads_final_hook(self, hook: GradsFinalHook) -> Any:
        """Register ``hook(params)``, called when gradients are final."""
        raise NotImplementedError

    def finish_iteration(self) -> bool:
        """End the iteration; return whether the parameters moved."""
        raise NotImplementedError


def check_local_optim_wrapper(optim_wrapper: Any, needed_by: str) -> None:
    """Refuse an optimizer wrapper that cannot train local modules.

    Args:
        optim_wrapper: The wrapper the Runner built from
            ``optim_wrapper`` in the config.
        needed_by (str): Who needs it, for the message (e.g.
            ``"LocalImageClassifier(rule='local')"``).

    Raises:
        InputTypeError: If ``optim_wrapper`` is not a
            :class:`LocalOptimContract`; the message names the config key
            to set.
    """
    if not isinstance(optim_wrapper, LocalOptimContract):
        raise InputTypeError(
            f'{needed_by} calls backward once per local module and steps '
            'the optimizer once per iteration, which needs a local '
            "optimizer wrapper: set optim_wrapper.type='LocalOptimWrapper' "
            "(or 'AmpLocalOptimWrapper' for mixed precision, "
            "'LayerwiseLocalOptimWrapper' to update each module at once) "
            f'in the config; got {type(optim_wrapper).__name__}')


class AuxHeadPlacement:
    """Where the auxiliary heads are between their uses.

    The classifier calls :meth:`training` around every training
    iteration, :meth:`before_loss` before head j computes its loss and
    :meth:`for_prediction` around a head's prediction. This default keeps
    every head where the model is and does nothing.
    """

    def training(self, optim_wrapper: Any) -> ContextManager[None]:
        """A context around one training iteration."""
        return nullcontext()

    def before_loss(self, index: int, device: torch.device) -> None:
        """Make head ``index`` usable on ``device`` for its loss."""

    @contextmanager
    def for_prediction(self, index: int,
                       device: torch.device) -> Iterator[None]:
        """A context in which head ``index`` predicts on ``device``."""
        yield

    def synchronize(self) -> None:
        """Wait for the copies in flight (before a state dict)."""
