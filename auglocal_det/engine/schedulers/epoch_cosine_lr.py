"""Cosine learning rate set once per epoch, with an optional blended
warm-up: the schedule of the AugLocal, InfoPro and MLAAN training scripts.
"""
import math
from typing import List

from mmengine.optim.scheduler.lr_scheduler import LRSchedulerMixin
from mmengine.optim.scheduler.param_scheduler import (
    INF,
    OptimizerType,
    _ParamScheduler,
)

from auglocal_det.errors import InputError
from auglocal_det.registry import PARAM_SCHEDULERS

__all__ = ['EpochCosineLR']


@PARAM_SCHEDULERS.register_module()
class EpochCosineLR(LRSchedulerMixin, _ParamScheduler):
    r"""Cosine annealing evaluated once per epoch, in closed form.

    Epoch ``t`` (counted from ``begin``, 0 for the first) trains at the
    rate of epoch number :math:`n = t + \mathrm{first\_epoch}`:

    .. math::

        c_n = 0.5 \, \eta_0 \left(1 + \cos\frac{\pi n}{T_{max}}\right)

    and, during a warm-up of :math:`W` epochs (:math:`n \le W`), a blend
    of the cosine with the start rate :math:`s = \mathrm{start\_factor}
    \cdot \eta_0`:

    .. math::

        \eta_n = c_n \frac{n - 1}{W} + s \frac{W + 1 - n}{W}

    where :math:`\eta_0` is each parameter group's initial learning rate
    (so ``--auto-scale-lr`` scales the whole curve). The rate is set when
    the epoch starts and stays constant through it, as the official
    scripts do; the expressions are evaluated in their order of
    operations, so the rates equal theirs to the last bit.

    - AugLocal / InfoPro / MLAAN small-image scripts: ``T_max`` = all
      epochs, ``first_epoch=1``, ``warmup_epochs=10`` and a start rate of
      0.01 (the rate is 0.01 in epoch 1, the blend reaches the cosine in
      epoch 11, and the last epoch trains at exactly 0).
    - Their ImageNet scripts: ``T_max`` = all epochs, ``first_epoch=0``,
      no warm-up (the first epoch trains at :math:`\eta_0`).

    The scheduler is epoch-based by design (``by_epoch=True``, stepped by
    the Runner after each epoch); it refuses ``convert_to_iter_based``.
    Its state is the epoch counter, so a run resumed in the middle of an
    epoch keeps that epoch's rate (restored with the optimizer) and
    continues the schedule at the next epoch.

    Args:
        optimizer (OptimWrapper or Optimizer): Wrapped optimizer.
        T_max (int): Number of epochs of the cosine period: the rate is
            0 at epoch number ``T_max``.
        first_epoch (int): Number ``n`` of the first epoch: 1 for the
            small-image scripts, 0 for the ImageNet ones. Defaults to 0.
        warmup_epochs (int): Number ``W`` of blended warm-up epochs
            (epoch numbers up to ``W``); 0 for none. Defaults to 0.
        start_factor (float): Start rate of the warm-up as a fraction of
            the initial rate (``0.01 / lr`` for a start at 0.01). Defaults
            to 0.
        begin (int): Epoch at which the schedule starts. Defaults to 0.
        end (int): Epoch at which it stops. Defaults to INF.
        last_step (int): The index of the last step, for resuming without
            a state dict. Defaults to -1.
        by_epoch (bool): Must be True. Defaults to True.
        verbose (bool): Print the rate at each update. Defaults to False.

    Examples:
        >>> param_scheduler = dict(
        ...     type='EpochCosineLR', T_max=400, first_epoch=1,
        ...     warmup_epochs=10, start_factor=0.01 / 0.8, begin=0,
        ...     end=400)
    """

    def __init__(self,
                 optimizer: OptimizerType,
                 T_max: int,
                 first_epoch: int = 0,
                 warmup_epochs: int = 0,
                 start_factor: float = 0.,
                 begin: int = 0,
                 end: int = INF,
                 last_step: int = -1,
                 by_epoch: bool = True,
                 verbose: bool = False) -> None:
        if not by_epoch:
            raise InputError(
                'EpochCosineLR sets the learning rate once per epoch: keep '
                'by_epoch=True in param_scheduler (for a rate that changes '
                'every iteration use CosineAnnealingLR with '
                'convert_to_iter_based=True, as the *_smooth.py schedules '
                'do)')
        if T_max <= 0:
            raise InputError(
                f'EpochCosineLR: T_max={T_max} (param_scheduler.T_max) must '
                'be a positive number of epochs')
        if warmup_epochs < 0 or start_factor < 0:
            raise InputError(
                'EpochCosineLR: warmup_epochs and start_factor '
                '(param_scheduler) must not be negative, got '
                f'{warmup_epochs} and {start_factor}')
        if warmup_epochs and first_epoch < 1:
            raise InputError(
                'EpochCosineLR: the blended warm-up numbers its epochs from '
                f'1; set param_scheduler.first_epoch=1 (got {first_epoch})')
        self.T_max = T_max
        self.first_epoch = first_epoch
        self.warmup_epochs = warmup_epochs
        self.start_factor = start_factor
        super().__init__(
            optimizer,
            begin=begin,
            end=end,
            last_step=last_step,
            by_epoch=by_epoch,
            verbose=verbose)

    @classmethod
    def build_iter_from_epoch(cls, *args, **kwargs):
        """Refuse ``convert_to_iter_based=True``: the schedule changes the
        rate at epoch boundaries only."""
        raise InputError(
            'EpochCosineLR sets the learning rate once per epoch, as the '
            'official training scripts do; remove convert_to_iter_based '
            'from its param_scheduler entry (the *_smooth.py schedules in '
            'configs/_base_/schedules/ change the rate every iteration)')

    def epoch_value(self, base_value: float, epoch: int) -> float:
        """The rate of one epoch.

        Args:
            base_value (float): The group's initial learning rate.
            epoch (int): The epoch index counted from ``begin`` (0 for the
                first).

        Returns:
            float: The rate for the whole epoch.
        """
        n = epoch + self.first_epoch
        warmup = self.warmup_epochs
        cosine = 0.5 * base_value * (1 + math.cos(math.pi * n / self.T_max))
        if not warmup or n > warmup:
            return cosine
        start = base_value * self.start_factor
        return cosine * (n - 1) / warmup + start * (warmup + 1 - n) / warmup

    def _get_value(self) -> List[float]:
        """The rates of the current epoch, one per parameter group."""
        return [
            self.epoch_value(base_value, self.last_step)
            for base_value in self.base_values
        ]
