"""Stop a diverged run; never save non-finite weights."""
import math
from typing import Any, Dict, List, Optional, Sequence

import torch
from mmengine.hooks import Hook
from mmengine.optim import AmpOptimWrapper

from auglocal_det.errors import InputError, TrainingDivergedError
from auglocal_det.registry import HOOKS

__all__ = ['NonFiniteLossHook']


def _non_finite(values: Dict[str, Any]) -> List[str]:
    """``name=value`` of the entries of ``values`` that are NaN or Inf."""
    found = []
    for name, value in values.items():
        if torch.is_tensor(value):
            if value.is_floating_point() and not bool(
                    torch.isfinite(value.detach()).all()):
                found.append(f'{name}={value.detach().float().mean():g}')
        elif isinstance(value, float) and not math.isfinite(value):
            found.append(f'{name}={value:g}')
    return found


@HOOKS.register_module()
class NonFiniteLossHook(Hook):
    """Stop training at the first NaN or Inf loss, naming the iteration.

    The local-learning models check their losses in
    :class:`~auglocal_det.engine.optim_wrappers.LocalOptimWrapper`; a model
    trained with MMEngine's plain ``OptimWrapper`` (the Mask R-CNN
    detectors) trains on after its loss became NaN, and its checkpoints
    hold NaN weights. This hook looks at the losses ``train_step`` returns
    after every iteration and raises
    :class:`~auglocal_det.errors.TrainingDivergedError` (printed by the
    tools as one line) at the first non-finite one, before any checkpoint
    of that iteration is written (it runs before ``CheckpointHook``).
    Every checkpoint is checked too: a weight that became NaN or Inf after
    a finite loss (an exploding gradient) stops the run instead of being
    saved.

    With ``AmpOptimWrapper`` the loss scaler skips updates whose gradients
    are not finite, and a few such iterations are normal while it settles
    its scale: training stops only after more than ``amp_patience``
    consecutive ones.

    Args:
        amp_patience (int): Consecutive non-finite losses tolerated under
            AMP. Defaults to 20.
        check_checkpoints (bool): Check the weights of every checkpoint
            before it is written. Defaults to True.
    """

    priority = 'ABOVE_NORMAL'

    def __init__(self,
                 amp_patience: int = 20,
                 check_checkpoints: bool = True) -> None:
        if amp_patience < 0:
            raise InputError(
                f'NonFiniteLossHook: amp_patience={amp_patience} '
                '(default_hooks.non_finite_loss.amp_patience) must be at '
                'least 0')
        self.amp_patience = amp_patience
        self.check_checkpoints = check_checkpoints
        self._streak = 0

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch: Optional[Any] = None,
                         outputs: Optional[dict] = None) -> None:
        """Raise at a non-finite loss (after ``amp_patience`` under AMP)."""
        if not isinstance(outputs, dict):
            return
        bad = _non_finite(outputs)
        if not bad:
            self._streak = 0
            return
        iteration = runner.iter + 1
        if isinstance(runner.optim_wrapper, AmpOptimWrapper):
            self._streak += 1
            if self._streak <= self.amp_patience:
                runner.logger.warning(
                    f'non-finite loss at iteration {iteration} '
                    f'({", ".join(bad)}): the AMP loss scaler skips this '
                    f'update ({self._streak} in a row, stopping after '
                    f'{self.amp_patience})')
                return
        raise TrainingDivergedError(
            f'non-finite loss (NaN or Inf) at iteration {iteration} (epoch '
            f'{runner.epoch + 1}, batch {batch_idx + 1}): {", ".join(bad)}. '
            'Training stopped; no checkpoint holds the weights of this '
            'iteration. Lower the learning rate (optim_wrapper.optimizer.'
            'lr), clip gradients (optim_wrapper.clip_grad=dict(max_norm='
            '...)) or check the data, then continue from the last '
            'checkpoint with --resume')

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Refuse to save weights that are NaN or Inf."""
        if not self.check_checkpoints:
            return
        state = checkpoint.get('state_dict') or {}
        bad = self._non_finite_tensors(state)
        if bad:
            raise TrainingDivergedError(
                f'the weights at iteration {runner.iter} hold non-finite '
                f'values (NaN or Inf) in {len(bad)} tensors '
                f'({", ".join(bad[:3])}{", ..." if len(bad) > 3 else ""}); '
                'training stopped without saving them. Lower the learning '
                'rate (optim_wrapper.optimizer.lr) or clip gradients '
                '(optim_wrapper.clip_grad=dict(max_norm=...)), then continue '
                'from the last checkpoint with --resume')

    @staticmethod
    def _non_finite_tensors(state: Dict[str, Any]) -> Sequence[str]:
        return [
            name for name, value in state.items()
            if torch.is_tensor(value) and value.is_floating_point()
            and not bool(torch.isfinite(value).all())
        ]
