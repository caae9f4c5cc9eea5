"""The Runner the package's tools build."""
from typing import Callable, Optional, Sequence, Tuple, Union

from mmengine.model import is_model_wrapper
from mmengine.runner import Runner
from mmengine.runner.checkpoint import (
    _load_checkpoint,
    _load_checkpoint_to_model,
)

from auglocal_det.registry import RUNNERS

from .checkpoint import safe_local_checkpoints
from .checkpoint_checks import (
    check_model_fit,
    check_resume_state,
    schedule_end_message,
)

__all__ = ['LocalRunner']


@RUNNERS.register_module()
class LocalRunner(Runner):
    """MMEngine's :class:`~mmengine.runner.Runner`, reading the user's
    ``--resume`` and ``load_from`` checkpoints safely under torch >= 2.6.

    A full training checkpoint holds more than tensors (numpy scalars in
    the message hub), which torch's default ``weights_only=True`` refuses.
    :meth:`load_or_resume` reads local files inside
    :func:`safe_local_checkpoints`: weights only, plus exactly the types
    such checkpoints hold; nothing else the run loads is affected.
    ``tools/train.py`` and ``tools/test.py`` build this runner unless the
    config names another one in ``runner_type``.
    """

    def load_or_resume(self) -> None:
        """Resume or load ``load_from`` with the package's safe loader."""
        with safe_local_checkpoints():
            return super().load_or_resume()

    #: The ``resume_*`` arguments while :meth:`resume` runs, else None.
    _resume_options: Optional[dict] = None

    def resume(self,
               filename: str,
               resume_optimizer: bool = True,
               resume_param_scheduler: bool = True,
               map_location: Union[str, Callable] = 'default') -> None:
        """Resume as MMEngine does, from a checkpoint that can continue
        this run.

        Refused before anything is loaded (see
        :mod:`~auglocal_det.engine.runner.checkpoint_checks`): weights that
        do not fit the model, and a file without the optimizer or scheduler
        state to resume. A schedule that ends before ``train_cfg`` does is
        logged as a warning.
        """
        self._resume_options = dict(
            resume_optimizer=resume_optimizer,
            resume_param_scheduler=resume_param_scheduler)
        try:
            super().resume(filename, resume_optimizer,
                           resume_param_scheduler, map_location)
        finally:
            self._resume_options = None
        message = schedule_end_message(self.param_schedulers,
                                       self.train_loop, self.optim_wrapper,
                                       filename)
        if message is not None:
            self.logger.warning(message)

    def load_checkpoint(self,
                        filename: str,
                        map_location: Union[str, Callable] = 'cpu',
                        strict: bool = False,
                        revise_keys: Sequence[Tuple[str, str]] = ((
                            r'^module.', ''), )) -> dict:
        """Load the weights of ``filename`` as MMEngine does, refusing a
        file whose weights are not exactly the model's.

        MMEngine reports missing, unexpected and differently shaped weights
        as log lines only; here they are an
        :class:`~auglocal_det.errors.InputError` naming the first keys and
        the file that fits (:func:`check_model_fit`).

        Returns:
            dict: The checkpoint.
        """
        checkpoint = _load_checkpoint(filename, map_location=map_location)
        self.call_hook('after_load_checkpoint', checkpoint=checkpoint)
        model = self.model.module if is_model_wrapper(
            self.model) else self.model
        resuming = self._resume_options is not None
        check_model_fit(checkpoint, model, filename, resuming, revise_keys)
        if resuming:
            check_resume_state(checkpoint, filename, self.optim_wrapper,
                               self.param_schedulers, **self._resume_options)
        checkpoint = _load_checkpoint_to_model(
            model, checkpoint, strict, revise_keys=revise_keys)
        self._has_loaded = True
        self.logger.info(f'Load checkpoint from {filename}')
        return checkpoint
