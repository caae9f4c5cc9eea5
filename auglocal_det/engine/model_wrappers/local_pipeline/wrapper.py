"""The stage iteration of pipelined local training.

:class:`LocalPipelineParallel` wires a ``LocalImageClassifier`` into a
pipeline: rank ``q * P + s`` is stage s of replica q. Stage s runs the
classifier's own driver, ``run_iteration``, over its modules, on the
batch (first stage) or on what the previous stage sent, and sends its
last output on before that module's backward. Each of its other jobs has
a file of its own: the messages (``wire.py``), stopping every rank when
one fails (``failures.py``), the split into stages (``partition.py``),
the log (``logs.py``), validation (``validation.py``) and the gathering
of the state for checkpoints and the release of the other stages'
tensors (``state.py``).
"""
import itertools
from typing import Any, Dict, List, Union

import torch
import torch.distributed as dist
import torch.nn as nn
from mmengine.logging import print_log

from auglocal_det.engine.optim_wrappers import (
    LayerwiseLocalOptimWrapper,
    LocalOptimWrapper,
    check_local_optim_wrapper,
)
from auglocal_det.errors import InputError
from auglocal_det.models.aux_heads import AuxBatch
from auglocal_det.registry import MODEL_WRAPPERS

from ..local_ddp import LocalDistributedDataParallel
from .failures import FailureReports
from .logs import LaggedLogs
from .partition import (
    check_pipelinable,
    owned_state_names,
    partition,
    stage_parts,
)
from .state import foreign_tensors, gather_state, release_foreign
from .validation import predict_through_stages
from .wire import TAG_TRAIN, Messenger

__all__ = ['LocalPipelineParallel']


class _Stage(nn.Module):
    """The modules one stage owns; what its data-parallel wrapper reduces.

    Args:
        pipeline (LocalPipelineParallel): The pipeline (not registered as a
            child, so that this module holds only the stage's parameters).
        parts (list[nn.Module]): The backbone layers and heads of the
            stage.
    """

    def __init__(self, pipeline: 'LocalPipelineParallel',
                 parts: List[nn.Module]) -> None:
        super().__init__()
        self.parts = nn.ModuleList(parts)
        self._pipeline = [pipeline]

    def train_step(self, data: Any,
                   optim_wrapper: LocalOptimWrapper) -> Dict[str, Any]:
        """The stage's share of one iteration (see
        :meth:`LocalPipelineParallel.train_step`)."""
        return self._pipeline[0].stage_train_step(data, optim_wrapper)


@MODEL_WRAPPERS.register_module()
class LocalPipelineParallel(nn.Module):
    """Pipeline-parallel training of a locally trained classifier.

    Select it with ``model_wrapper_cfg=dict(type='LocalPipelineParallel',
    num_stages=P)`` and launch ``P x R`` processes (``tools/dist_train.sh``,
    ``--launcher pytorch``); the training sampler must shard over the R
    replicas (``PipelineSampler`` with the same ``num_stages``). Every
    rank runs the Runner's loop; a stage other than the first ignores the
    batches of its loader (:class:`LocalPipelineHook` gives it an empty
    one) and receives the previous stage's output instead.

    Args:
        module (nn.Module): A ``LocalImageClassifier`` with
            ``rule='local'`` (not MLAAN), already on its device.
        num_stages (int): Number of stages P of a replica.
        balance (str | Sequence[int]): ``'auto'`` (contiguous stages that
            minimise the slowest stage's FLOPs, see ``module_costs``),
            ``'time'`` (the same with every module's training time, measured
            at start on every rank on a synthetic batch of
            ``profile_batch_size`` images and averaged over the ranks, see
            ``module_times``: on devices where the time per FLOP differs
            between modules, e.g. CPUs, small batches, or the optimizer
            step weighing much) or the number of local modules of every
            stage. Defaults to ``'auto'``.
        profile_batch_size (int): Batch of the ``'time'`` measurement; the
            per-rank training batch is the best choice. Defaults to 8.
        max_in_flight (int): Outputs a stage may have sent that the next
            stage has not received yet; bounds how far a stage runs ahead.
            Defaults to 2.
        broadcast_buffers (bool): Passed to the stage's
            :class:`LocalDistributedDataParallel` when there are several
            replicas. Defaults to False.
        standalone (bool): Used outside a Runner (scripts, tests), which
            then call :meth:`gather_state`, :meth:`drain_logs` and
            :meth:`close` themselves. Defaults to False: under a Runner,
            training refuses to start unless ``LocalPipelineHook`` is in
            ``custom_hooks`` (without it a checkpoint would miss the
            weights of the later stages).

    Every rank trains with its own modules only: its first
    :meth:`train_step` releases the parameters and buffers of the other
    stages' backbone layers, auxiliary heads and classifier to the
    ``meta`` device (see ``state.py``), so that the weights, gradients
    and optimizer state of a rank are those of its stage. Until then (the
    weights' initialisation, a checkpoint loaded by ``load_from`` or
    ``--resume``) every rank holds the whole network. Rank 0 takes the
    others' state in host memory before a checkpoint and the export, and
    releases it again in its next iteration.

    Attributes:
        stage (int): This rank's stage s.
        replica (int): This rank's replica q.
        modules (range): The local modules this stage owns.
        sizes (list[int]): Local modules per stage.
        foreign_tensors (list[Tensor]): The parameters and buffers of the
            other stages.
    """

    def __init__(self,
                 module: nn.Module,
                 num_stages: int,
                 balance: Union[str, List[int]] = 'auto',
                 max_in_flight: int = 2,
                 broadcast_buffers: bool = False,
                 standalone: bool = False,
                 profile_batch_size: int = 8) -> None:
        super().__init__()
        num_stages = int(num_stages)
        check_pipelinable(module, num_stages)
        if not (dist.is_available() and dist.is_initialized()):
            raise InputError(
                'model_wrapper_cfg.type=LocalPipelineParallel needs '
                'several processes: launch with --launcher pytorch '
                '(tools/dist_train.sh CONFIG GPUS)')
        self.module = module
        world, rank = dist.get_world_size(), dist.get_rank()
        if world % num_stages:
            raise InputError(
                f'model_wrapper_cfg.num_stages={num_stages} must divide the '
                f'number of processes ({world}): processes = stages x '
                'replicas')
        self.num_stages = num_stages
        self.num_replicas = world // num_stages
        self.stage = rank % num_stages
        self.replica = rank // num_stages
        self.max_in_flight = max(1, int(max_in_flight))
        # the process groups are made in the same order on every rank
        self.messenger = Messenger(
            dist.new_group(backend='gloo'), self.max_in_flight)
        self.balanced_by = 'time' if balance == 'time' else 'FLOPs'
        self.sizes, self.efficiency = partition(
            module, num_stages, balance, int(profile_batch_size),
            self.messenger.group)
        starts = [0] + list(itertools.accumulate(self.sizes))
        self.stage_ranges = [
            range(a, b) for a, b in zip(starts[:-1], starts[1:])
        ]
        self.modules = self.stage_ranges[self.stage]
        self.first_rank = self.replica * num_stages
        self.prev_rank = rank - 1 if self.stage > 0 else None
        self.next_rank = rank + 1 if self.stage < num_stages - 1 else None
        stage_groups = [
            dist.new_group([q * num_stages + s
                            for q in range(self.num_replicas)])
            for s in range(num_stages)
        ]
        self.stage_group = stage_groups[self.stage]
        self.failures = FailureReports(
            f'stage {self.stage}, replica {self.replica}, local modules '
            f'{self.modules.start}..{self.modules.stop - 1}')
        self._closed = False
        #: set by LocalPipelineHook before training
        self.hook_attached = bool(standalone)
        # whether a head after this stage reads the [0, 1] images
        self._needs_images = module.reads_images(
            range(self.modules.stop, module.num_aux))
        self.owned_state_names = owned_state_names(module, self.modules)
        self._stage = (_Stage(self, stage_parts(module, self.modules)), )
        self.device = next(self._stage[0].parameters()).device
        #: whether other stages' tensors or optimizer state are held here
        self.holds_foreign = True
        self.foreign_tensors = foreign_tensors(self._stage[0], [
            part for s, modules in enumerate(self.stage_ranges)
            if s != self.stage for part in stage_parts(module, modules)
        ])
        self._ddp = None
        if self.num_replicas > 1:
            self._ddp = (LocalDistributedDataParallel(
                self._stage[0],
                broadcast_buffers=broadcast_buffers,
                process_group=self.stage_group), )
        self.logs = LaggedLogs(self.messenger, self.stage, num_stages,
                               self.replica, self.max_in_flight)
        self._iteration = 0
        #: (iteration, with optimizer state) of the last gather
        self._gathered = (-1, False)
        if rank == 0:
            print_log(self.describe(), logger='current')

    @property
    def stage_module(self) -> nn.Module:
        """nn.Module: The layers and heads this stage owns."""
        return self._stage[0]

    def describe(self) -> str:
        """One line: the modules of every stage and the predicted
        efficiency."""
        parts = [
            f'stage {s}: modules {r.start}..{r.stop - 1}'
            for s, r in enumerate(self.stage_ranges)
        ]
        return (f'LocalPipelineParallel: {self.num_stages} stages x '
                f'{self.num_replicas} replicas; ' + '; '.join(parts) +
                f'; predicted efficiency {self.efficiency:.1%} '
                f'({self.balanced_by} of the slowest stage vs. an even '
                'split)')

    # --------------------------------------------------------------- train
    def train_step(self, data: Union[dict, tuple, list, None],
                   optim_wrapper: LocalOptimWrapper) -> Dict[str, Any]:
        """This stage's share of one iteration.

        The first stage preprocesses ``data``; the others receive the
        previous stage's output (``data`` is ignored). The other stages'
        tensors held here are released first (:meth:`release_foreign`).
        The stage runs the classifier's ``local_steps`` over its own
        modules, back-propagates each loss at once, sends its last module's
        output on as soon as it exists, and ends the iteration with one
        optimizer step over its own parameters (their gradients averaged
        over the replicas).

        Args:
            data (dict | tuple | list | None): A batch (first stage).
            optim_wrapper (LocalOptimWrapper): The optimizer wrapper.

        Returns:
            dict: The stage's log variables (rank 0 adds those of the other
            stages of its replica, see ``LaggedLogs``).
        """
        check_local_optim_wrapper(optim_wrapper, 'LocalPipelineParallel')
        self._check_optim_wrapper(optim_wrapper)
        if not self.hook_attached:
            raise InputError(
                'LocalPipelineParallel needs LocalPipelineHook: add '
                "dict(type='LocalPipelineHook') to custom_hooks (it gathers "
                "the stages' weights before checkpoints and the export)")
        with self.failures.guard(), \
                optim_wrapper.sync_group(self.stage_group):
            self.release_foreign(optim_wrapper)
            if self._ddp is not None:
                log_vars = self._ddp[0].train_step(data, optim_wrapper)
            else:
                log_vars = self.stage_train_step(data, optim_wrapper)
            self._iteration += 1
            return self.logs.gather(log_vars)

    @staticmethod
    def _check_optim_wrapper(optim_wrapper: LocalOptimWrapper) -> None:
        if isinstance(optim_wrapper, LayerwiseLocalOptimWrapper):
            raise InputError(
                'LocalPipelineParallel steps each stage once per iteration; '
                "set optim_wrapper.type='LocalOptimWrapper' (a stage "
                'updates its modules while the next stage computes anyway)')
        clip = optim_wrapper.clip_grad_kwargs
        if clip and clip.get('type', 'norm') == 'norm':
            raise InputError(
                'optim_wrapper.clip_grad by norm clips with the norm over '
                'all parameters, which spans every pipeline stage; use '
                "clip_grad=dict(type='value', clip_value=...) or none")

    def stage_train_step(self, data: Any,
                         optim_wrapper: LocalOptimWrapper) -> Dict[str, Any]:
        """The stage's iteration (called directly, or by the stage's
        data-parallel wrapper): the classifier's own
        :meth:`~LocalImageClassifier.run_iteration` over the stage's
        modules, on the batch (first stage) or on what the previous stage
        sent, sending the last module's output on before its backward."""
        model = self.module
        if self.stage == 0:
            return model.run_iteration(
                optim_wrapper, data, modules=self.modules,
                before_backward=self._send_output)
        return model.run_iteration(
            optim_wrapper,
            **self._receive_input(self.device),
            modules=self.modules,
            before_backward=self._send_output)

    def _receive_input(self, device: torch.device) -> Dict[str, Any]:
        """The previous stage's output and the batch it goes with."""
        received = self.messenger.recv(self.prev_rank, TAG_TRAIN, device)
        images = received[2] if len(received) > 2 else None
        return dict(
            inputs=received[0],
            batch=AuxBatch(labels=received[1], images=images))

    def _send_output(self, step: Any, batch: AuxBatch) -> None:
        """Send the stage's last output on (before its backward)."""
        if step.index == self.modules.stop - 1 and \
                self.next_rank is not None:
            out = [step.output, batch.labels]
            if self._needs_images:
                out.append(batch.images)
            self.messenger.send(out, self.next_rank, TAG_TRAIN)

    def drain_logs(self) -> None:
        """Receive the log messages of the last iterations (rank 0), and
        wait for ours to be received (other stages of replica 0)."""
        self.logs.drain()

    def flush(self) -> None:
        """Wait until the next stage has received everything sent to it."""
        self.messenger.flush()

    # ---------------------------------------------------------- validation
    @torch.no_grad()
    def val_step(self, data: Union[dict, tuple, list]) -> list:
        """Predictions of the whole network for this rank's batch (see
        ``validation.py``; every rank calls it with a batch of its own).

        Args:
            data (dict | tuple | list): A batch from the data loader.

        Returns:
            list[ClsDataSample]: The samples with the network's and every
            auxiliary head's predictions, as the classifier's ``predict``.
        """
        with self.failures.guard():
            return predict_through_stages(self, data)

    def test_step(self, data: Union[dict, tuple, list]) -> list:
        """Same as :meth:`val_step`."""
        return self.val_step(data)

    def forward(self, *args, **kwargs) -> Any:
        """Call the wrapped model (whose other stages' tensors are on the
        ``meta`` device once training has started)."""
        return self.module(*args, **kwargs)

    # --------------------------------------------------------------- state
    def gather_state(self, optim_wrapper: Any = None) -> None:
        """Copy the weights, buffers and optimizer state of the other
        stages of replica 0 to rank 0, which then holds the whole trained
        network (for a checkpoint or an export; the other stages' part in
        host memory until :meth:`release_foreign`). Call it on every rank.

        Nothing is sent again when rank 0 already holds this iteration's
        state (a last checkpoint, then the best one, then the export).

        Args:
            optim_wrapper (OptimWrapper, optional): Also gather the
                optimizer state of its parameters. Defaults to None.
        """
        last, with_optim = self._gathered
        if last == self._iteration and (with_optim or optim_wrapper is None):
            return  # the same decision on every rank
        with self.failures.guard():
            gather_state(self, optim_wrapper)
        self._gathered = (self._iteration, optim_wrapper is not None)

    def release_foreign(self, optim_wrapper: Any = None) -> None:
        """Release the other stages' parameters and buffers to the
        ``meta`` device, and drop the optimizer state of their parameters
        (loaded from a checkpoint, or gathered for one): this stage never
        uses either. :meth:`train_step` calls it; it costs nothing when
        there is nothing to release.

        Args:
            optim_wrapper (OptimWrapper, optional): The optimizer wrapper.
                Defaults to None.
        """
        release_foreign(self, optim_wrapper)

    def close(self) -> None:
        """End the pipeline cleanly (every rank, when training ends): wait
        for the outstanding messages and stop the report listener."""
        if self._closed:
            return
        self._closed = True
        with self.failures.guard():
            self.messenger.flush()
            self.failures.close()
