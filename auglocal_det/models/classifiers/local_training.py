"""The training iteration of a local-learning classifier.

:class:`LocalTrainingMixin` holds :meth:`~LocalTrainingMixin.run_iteration`,
the one driver of a training iteration, and the logging of its steps.
``LocalImageClassifier`` supplies what the driver consumes: the generator
of :class:`LocalStep` records (``local_steps``), the batch the heads read
(``aux_batch``), the data preprocessor and the head placement.

The driver preprocesses the batch, back-propagates each step through
``optim_wrapper.backward(loss, params=...)`` as soon as it exists, logs it,
ends the iteration with ``optim_wrapper.finish_iteration()`` and then calls
:meth:`~LocalTrainingMixin.after_update` if the parameters moved.
``train_step`` is this driver over all modules; a pipeline stage, the stage
balancer and the benchmarks call it too, with a module range where they
need one.
"""
from collections import OrderedDict
from typing import Callable, Dict, List, NamedTuple, Optional, Union

import torch
import torch.nn as nn
from mmengine.optim import OptimWrapper

from auglocal_det.local_protocol import (
    LocalOptimContract,
    check_local_optim_wrapper,
)

from ..aux_heads import AuxBatch

__all__ = ['LocalStep', 'LocalTrainingMixin']


class LocalStep(NamedTuple):
    """One local loss of an iteration and what it trains.

    Attributes:
        index (int): Index j of the local module whose loss this is.
        name (str): Readable description, e.g. ``'local module 3
            (layer1.2, loss_l03)'``, for messages.
        output (Tensor): Output of module j (what module j + 1 reads,
            after detaching).
        loss (Tensor): The local loss (the sum of ``losses``).
        losses (dict[str, Tensor]): The loss's weighted parts, as the head
            named them (``loss_ce``, ``loss_rec``, ...).
        logits (dict[str, Tensor]): Class predictions to report the
            accuracy of, by suffix: ``''`` is logged as ``acc_lXX``, another
            key ``k`` as ``acc_lXX_k``. Empty for a head without any.
        params (list[Parameter]): The parameters whose gradients are final
            for the iteration once ``loss`` has been back-propagated.
    """

    index: int
    name: str
    output: torch.Tensor
    loss: torch.Tensor
    losses: Dict[str, torch.Tensor]
    logits: Dict[str, torch.Tensor]
    params: List[nn.Parameter]


class LocalTrainingMixin:
    """The training driver of ``LocalImageClassifier``.

    The class using it provides ``local_steps(inputs, batch, modules)``,
    ``aux_batch(inputs, data_samples)``, ``num_modules``, ``_tag(index)``,
    ``data_preprocessor`` and ``head_placement``.
    """

    def step_log(self, step: LocalStep,
                 labels: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Detached loss, parts and accuracies of one step, for logging.

        Args:
            step (LocalStep): The step.
            labels (Tensor): Ground-truth labels of the batch.

        Returns:
            dict[str, Tensor]: ``loss_<tag>``; ``<tag>_<part>`` for every
            part when the loss has several; ``acc_<tag>`` (and
            ``acc_<tag>_<k>``) for the step's logits, where ``<tag>`` is
            ``lXX`` (``cls`` for BP).
        """
        tag = self._tag(step.index)
        out: Dict[str, torch.Tensor] = OrderedDict()
        out[f'loss_{tag}'] = step.loss.detach()
        if len(step.losses) > 1:
            for name, value in step.losses.items():
                part = name[len('loss'):] if name.startswith(
                    'loss') else name
                out[f'{tag}_{part.strip("_") or "part"}'] = value.detach()
        for key, logits in step.logits.items():
            out['_'.join(filter(None, ('acc', tag, key)))] = self._top1(
                logits, labels)
        return out

    @staticmethod
    def _top1(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Top-1 accuracy in percent (a detached scalar tensor)."""
        with torch.no_grad():
            correct = logits.argmax(dim=1).eq(labels).float()
            return correct.mean() * 100.

    def after_update(self) -> None:
        """Called by :meth:`train_step` after every iteration that updated
        the parameters (a no-op here; MLAAN moves its EMA twins)."""

    def train_step(self, data: Union[dict, tuple, list],
                   optim_wrapper: OptimWrapper) -> Dict[str, torch.Tensor]:
        """One training iteration: :meth:`run_iteration` over all modules.

        Args:
            data (dict | tuple | list): A batch from the dataloader.
            optim_wrapper (OptimWrapper): A ``LocalOptimWrapper`` (or one of
                its subclasses); with ``rule='bp'`` any MMEngine
                ``OptimWrapper`` works.

        Returns:
            dict[str, Tensor]: ``loss`` (the sum of the local losses), the
            loss and top-1 accuracy of every step, for logging.
        """
        return self.run_iteration(optim_wrapper, data)

    def run_iteration(
        self,
        optim_wrapper: OptimWrapper,
        data: Union[dict, tuple, list, None] = None,
        inputs: Optional[torch.Tensor] = None,
        batch: Optional[AuxBatch] = None,
        modules: Optional[range] = None,
        before_backward: Optional[Callable[[LocalStep, AuxBatch],
                                           None]] = None,
        after_backward: Optional[Callable[[LocalStep], None]] = None
    ) -> Dict[str, torch.Tensor]:
        """The one driver of a training iteration.

        Preprocesses ``data`` (or takes ``inputs`` and ``batch``), then,
        for each step of :meth:`local_steps` (computed under
        ``optim_wrapper.optim_context``, i.e. autocast with AMP), calls
        ``optim_wrapper.backward(step.loss, params=step.params)`` at once,
        which frees the step's graph and tells the wrapper which gradients
        are final, and logs the step. ``optim_wrapper.finish_iteration()``
        then steps the optimizer once (respecting gradient accumulation)
        and, if it did, :meth:`after_update` runs. The whole iteration runs
        inside ``head_placement.training(optim_wrapper)``.

        Args:
            optim_wrapper (OptimWrapper): A ``LocalOptimWrapper``; with one
                local module (``rule='bp'``) any MMEngine ``OptimWrapper``.
            data (dict | tuple | list, optional): A batch from the
                dataloader. Defaults to None: ``inputs`` and ``batch``.
            inputs (Tensor, optional): Preprocessed images, or the output
                of the module before ``modules``. Defaults to None.
            batch (AuxBatch, optional): What the heads read with
                ``inputs``. Defaults to None.
            modules (range, optional): The consecutive modules to train
                (a pipeline stage's). Defaults to None: all.
            before_backward (callable, optional): Called with every step and
                ``batch`` before its backward (a pipeline stage sends its
                last output on there). Defaults to None.
            after_backward (callable, optional): Called with every step
                after its backward (where a benchmark reads its clock).
                Defaults to None.

        Returns:
            dict[str, Tensor]: ``loss`` (the sum of the steps' losses), the
            loss and top-1 accuracy of every step, for logging.
        """
        if self.num_modules > 1:
            check_local_optim_wrapper(optim_wrapper, type(self).__name__)
        local = isinstance(optim_wrapper, LocalOptimContract)
        with self.head_placement.training(optim_wrapper):
            if data is not None:
                with optim_wrapper.optim_context(self):
                    data = self.data_preprocessor(data, True)
                inputs = data.pop('inputs')
                batch = self.aux_batch(inputs, data['data_samples'])
            log_vars: Dict[str, torch.Tensor] = OrderedDict(loss=None)
            total = inputs.new_zeros((), dtype=torch.float32)
            steps = self.local_steps(inputs, batch, modules)
            del inputs  # held by the first module's graph only, then freed
            while True:
                with optim_wrapper.optim_context(self):
                    step = next(steps, None)
                if step is None:
                    break
                if before_backward is not None:
                    before_backward(step, batch)
                if local:
                    optim_wrapper.backward(
                        step.loss, params=step.params, name=step.name)
                else:  # one end-to-end loss with MMEngine's wrapper
                    optim_wrapper.update_params(step.loss)
                if after_backward is not None:
                    after_backward(step)
                step_log = self.step_log(step, batch.labels)
                log_vars.update(step_log)
                total = total + step_log[
                    f'loss_{self._tag(step.index)}'].float()
                del step
            if local and optim_wrapper.finish_iteration():
                self.after_update()
        log_vars['loss'] = total
        return log_vars
