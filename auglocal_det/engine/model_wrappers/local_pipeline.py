"""Pipelined training of locally trained networks (update unlocking).

No gradient crosses local modules, so module j at iteration t trains on
the output of module j - 1 under its weights after iteration t - 1, both in
the sequential ``train_step`` and in a pipeline whose stages take the
batches in order. :class:`LocalPipelineParallel` runs such a pipeline with
``torch.distributed``: the world is ``num_stages`` stages times R
data-parallel replicas (rank = replica * num_stages + stage). Within a
replica, stage s owns a contiguous range of local modules (their backbone
layers and auxiliary heads; the last stage also the network's classifier),
runs the classifier's own step generator restricted to that range, steps
the optimizer on its own parameters, and sends the detached output of its
last module forward (with the labels, and the [0, 1] images when a later
head reconstructs them). Nothing travels backward but small control
messages. Each stage's gradients are averaged over its replicas by
:class:`LocalDistributedDataParallel` in the stage's group. The updates
are those of sequential training, bit for bit on CPU with the same
intra-op thread count.

What cannot be pipelined this way is refused with
:class:`~auglocal_det.errors.InputError`: end-to-end backpropagation (its
backward crosses every stage), MLAAN (its cascaded stream and its EMA
twins read modules of earlier and later stages), a gradient-norm clip
(a norm over all stages' parameters) and the layer-wise optimizer wrapper.

Every rank holds the whole network (the Runner builds it), but only its
own modules get gradients and optimizer state. Checkpoints, validation
and export see the whole network: :class:`LocalPipelineHook` copies the
other stages' weights and optimizer state to rank 0 before every
checkpoint and the export; validation sends each rank's batch through the
stages of its replica and back.
"""
import itertools
import threading
from collections import OrderedDict
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.distributed as dist
import torch.nn as nn
from mmengine.logging import print_log

from auglocal_det import errors
from auglocal_det.engine.optim_wrappers import (
    LocalOptimWrapper,
    check_local_optim_wrapper,
)
from auglocal_det.errors import InputError
from auglocal_det.registry import MODEL_WRAPPERS

from .local_ddp import LocalDistributedDataParallel
from .pipeline_balance import balance_stages, module_profile, module_times

__all__ = [
    'LocalPipelineParallel', 'PipelineStoppedError', 'balance_stages',
    'module_costs'
]

# message tags (gloo matches point-to-point messages by peer and tag)
_TAG_TRAIN = 11
_TAG_VAL = 12
_TAG_CTRL = 13
_TAG_LOG = 14
_HEADER = 40  # int64 slots: status, count, then per tensor dtype, ndim, dims
_MAX_DIMS = 6
_CTRL_BYTES = 4096
_DTYPES = [
    torch.float32, torch.float16, torch.bfloat16, torch.float64,
    torch.int64, torch.int32, torch.uint8, torch.bool
]
_FORWARDED = ('TrainingDivergedError', 'InputError')


class PipelineStoppedError(RuntimeError):
    """Another rank of the pipeline failed; the message says which and why.
    """


def module_costs(model: nn.Module,
                 image_size: Union[int, Sequence[int], None] = None
                 ) -> List[float]:
    """Forward FLOPs per image of every local step (module and its loss).

    The backward of a convolution or linear layer costs about twice its
    forward, so these are proportional to each module's training cost.

    Args:
        model (nn.Module): A ``LocalImageClassifier``.
        image_size (int | Sequence[int], optional): Crop size. Defaults to
            None: ``model.image_size``.

    Returns:
        list[float]: FLOPs of step j, for j = 0 .. K - 1.
    """
    return module_profile(model, image_size)['step_flops']


# -------------------------------------------------------------- messages
def _header(tensors: Sequence[torch.Tensor], status: int = 0) -> torch.Tensor:
    """The int64 header describing ``tensors`` (dtype and shape of each)."""
    header = torch.zeros(_HEADER, dtype=torch.long)
    header[0], header[1] = status, len(tensors)
    pos = 2
    for tensor in tensors:
        if tensor.dim() > _MAX_DIMS or pos + 2 + tensor.dim() > _HEADER:
            raise RuntimeError('pipeline message too large for its header')
        header[pos] = _DTYPES.index(tensor.dtype)
        header[pos + 1] = tensor.dim()
        header[pos + 2:pos + 2 + tensor.dim()] = torch.tensor(tensor.shape)
        pos += 2 + tensor.dim()
    return header


def _empty_like_header(header: torch.Tensor,
                       device: torch.device) -> List[torch.Tensor]:
    """Allocate the tensors a header describes."""
    values = header.tolist()
    out, pos = [], 2
    for _ in range(values[1]):
        dtype, ndim = _DTYPES[values[pos]], values[pos + 1]
        shape = values[pos + 2:pos + 2 + ndim]
        out.append(torch.empty(shape, dtype=dtype, device=device))
        pos += 2 + ndim
    return out


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
            minimise the slowest stage's FLOPs, see :func:`module_costs`),
            ``'time'`` (the same with every module's training time, measured
            at start on every rank on a synthetic batch of
            ``profile_batch_size`` images and averaged over the ranks, see
            :func:`~.pipeline_balance.module_times`: on devices where the
            time per FLOP differs between modules, e.g. CPUs, small
            batches, or the optimizer step weighing much) or the number of
            local modules of every stage. Defaults to ``'auto'``.
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
            ``custom_hooks`` (without it a checkpoint would hold stale
            weights of the later stages).

    Attributes:
        stage (int): This rank's stage s.
        replica (int): This rank's replica q.
        modules (range): The local modules this stage owns.
        sizes (list[int]): Local modules per stage.
    """

    def __init__(self,
                 module: nn.Module,
                 num_stages: int,
                 balance: Union[str, Sequence[int]] = 'auto',
                 max_in_flight: int = 2,
                 broadcast_buffers: bool = False,
                 standalone: bool = False,
                 profile_batch_size: int = 8) -> None:
        super().__init__()
        num_stages = int(num_stages)
        self._check_pipelinable(module, num_stages)
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
        # gloo group for headers and control messages (works under NCCL)
        self._ctrl = dist.new_group(backend='gloo')
        self.balanced_by = 'time' if balance == 'time' else 'FLOPs'
        self.sizes, self.efficiency = self._partition(
            module, num_stages, balance, int(profile_batch_size), self._ctrl)
        starts = [0] + list(itertools.accumulate(self.sizes))
        self.stage_ranges = [
            range(a, b) for a, b in zip(starts[:-1], starts[1:])
        ]
        self.modules = self.stage_ranges[self.stage]
        self._first = self.replica * num_stages
        self._prev = rank - 1 if self.stage > 0 else None
        self._next = rank + 1 if self.stage < num_stages - 1 else None
        stage_groups = [
            dist.new_group([q * num_stages + s
                            for q in range(self.num_replicas)])
            for s in range(num_stages)
        ]
        self.stage_group = stage_groups[self.stage]
        self._sends: List[Tuple[Any, List[torch.Tensor]]] = []
        # failure reports: a thread waits for them on a group of their own
        self._alarm_group = dist.new_group(backend='gloo')
        self._failure: Optional[str] = None
        self._reported = threading.Event()
        self._listener = threading.Thread(
            target=self._listen, name='pipeline-listener', daemon=True)
        self._listener.start()
        self._closed = False
        #: set by LocalPipelineHook before training
        self.hook_attached = bool(standalone)
        self._needs_images = self._images_needed(module, self.modules)
        self._owned = self._owned_state_names(module, self.modules)
        self._stage = (_Stage(self, self._stage_parts(module, self.modules)),)
        self._ddp = None
        if self.num_replicas > 1:
            self._ddp = (LocalDistributedDataParallel(
                self._stage[0],
                broadcast_buffers=broadcast_buffers,
                process_group=self.stage_group), )
        self._log_keys: Optional[List[List[str]]] = None
        self._pending_logs: List[Tuple[Any, torch.Tensor]] = []
        self._log_recvs: Dict[int, List[Tuple[Any, torch.Tensor]]] = {}
        self._log_iter = 0
        self._iteration = 0
        if rank == 0:
            print_log(self.describe(), logger='current')

    # ----------------------------------------------------------- structure
    @staticmethod
    def _check_pipelinable(model: nn.Module, num_stages: int) -> None:
        """Refuse models whose updates a pipeline cannot reproduce."""
        if num_stages < 1:
            raise InputError('model_wrapper_cfg.num_stages must be at least '
                             f'1, got {num_stages}')
        if not hasattr(model, 'local_steps'):
            raise InputError(
                'LocalPipelineParallel trains a LocalImageClassifier; got '
                f'{type(model).__name__}')
        if getattr(model, 'rule', 'local') == 'bp':
            raise InputError(
                "model.rule='bp' cannot be pipelined: end-to-end "
                "backpropagation's backward crosses every stage; use "
                "rule='local' or model_wrapper_cfg.type="
                "'LocalDistributedDataParallel'")
        if getattr(model, 'aux_head_offload', None) is not None:
            raise InputError(
                'model.aux_head_offload sends each auxiliary head back to '
                'host memory after its per-layer update, which '
                'LocalPipelineParallel does not make (it takes one '
                'optimizer step per update); set model.aux_head_offload='
                'None')
        if hasattr(model, 'cascade_range') and num_stages > 1:
            raise InputError(
                f'{type(model).__name__} cannot be pipelined exactly: the '
                f'cascaded stream of module i re-runs modules i - '
                f'{model.span - 1} .. i, and the EMA twins of its leap '
                'augmented modules follow layers of later modules, so every '
                'stage boundary would be crossed; train MLAAN with '
                "model_wrapper_cfg.type='LocalDistributedDataParallel'")
        if model.num_modules < num_stages:
            raise InputError(
                f'model_wrapper_cfg.num_stages={num_stages} is more than '
                f'the model has local modules ({model.num_modules})')

    @staticmethod
    def _partition(model: nn.Module, num_stages: int,
                   balance: Union[str, Sequence[int]],
                   profile_batch_size: int = 8,
                   group: Optional[Any] = None) -> Tuple[List[int], float]:
        if isinstance(balance, str):
            if balance not in ('auto', 'time'):
                raise InputError(
                    "model_wrapper_cfg.balance must be 'auto', 'time' or a "
                    f'list of modules per stage, got {balance!r}')
            if balance == 'auto':
                return balance_stages(module_costs(model), num_stages)
            if profile_batch_size < 1:
                raise InputError(
                    'model_wrapper_cfg.profile_batch_size must be at least '
                    f'1, got {profile_batch_size}')
            # every rank measures; all use the mean, hence one partition
            times = torch.tensor(
                module_times(model, profile_batch_size), dtype=torch.float64)
            dist.all_reduce(times, group=group)
            times /= dist.get_world_size(group)
            return balance_stages(times.tolist(), num_stages)
        costs = module_costs(model)
        sizes = [int(n) for n in balance]
        if len(sizes) != num_stages or min(sizes) < 1 or \
                sum(sizes) != model.num_modules:
            raise InputError(
                f'model_wrapper_cfg.balance={list(balance)} must give '
                f'{num_stages} positive module counts summing to the '
                f"model's {model.num_modules} local modules")
        starts = [0] + list(itertools.accumulate(sizes))
        slowest = max(sum(costs[a:b]) for a, b in zip(starts, starts[1:]))
        return sizes, sum(costs) / (num_stages * slowest)

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

    @staticmethod
    def _stage_parts(model: nn.Module, modules: range) -> List[nn.Module]:
        layers = model.backbone.local_layers()
        parts: List[nn.Module] = []
        for j in modules:
            first, last = model.module_ranges[j]
            parts.extend(layers[first:last + 1])
            parts.append(model.aux_heads[j] if j < model.num_aux else
                         model.head)
        return parts

    @classmethod
    def _owned_state_names(cls, model: nn.Module,
                           modules: range) -> List[str]:
        """Names in ``model.state_dict()`` of the stage's tensors."""
        ids = set()
        for part in cls._stage_parts(model, modules):
            ids.update(id(t) for t in part.state_dict(keep_vars=True)
                       .values())
        return [
            name for name, t in model.state_dict(keep_vars=True).items()
            if id(t) in ids
        ]

    @staticmethod
    def _images_needed(model: nn.Module, modules: range) -> bool:
        """Whether a head after this stage reads the [0, 1] images."""
        return model.reads_images(range(modules.stop, model.num_aux))

    # ------------------------------------------------------------ messages
    def _listen(self) -> None:
        """Thread: receive the other ranks' reports until training ends.

        A report is ``'done'`` (the previous rank closed the pipeline) or a
        failure: its exception type and message.
        """
        while True:
            buf = torch.zeros(_CTRL_BYTES, dtype=torch.uint8)
            try:
                dist.irecv(buf, group=self._alarm_group,
                           tag=_TAG_CTRL).wait()
            except RuntimeError:  # a peer vanished, or the group ended
                return
            text = bytes(buf.tolist()).rstrip(b'\0').decode()
            if text == 'done':
                return
            if self._failure is None:
                self._failure = text
            self._reported.set()

    def _check_stop(self) -> None:
        """Raise the failure another rank reported, if any."""
        if self._failure is not None:
            self._raise_reported()

    def _raise_reported(self, cause: Optional[BaseException] = None
                        ) -> None:
        """Raise the failure another rank reported (its type, its text).
        """
        kind, _, message = self._failure.partition('\n')
        exc = getattr(errors, kind, PipelineStoppedError)(message)
        exc._pipeline_forwarded = True
        raise exc from cause

    @staticmethod
    def _wait(work: Any) -> None:
        """Wait for a point-to-point operation.

        If the peer failed, it reported why before it exited, and the
        wait fails with gloo's "connection closed"; :meth:`_guard` then
        raises the peer's reason instead.
        """
        work.wait()

    def _send(self, tensors: List[torch.Tensor], dst: int, tag: int,
              wait: bool = False) -> None:
        """Send tensors: a header on the control group, then the data."""
        tensors = [t.detach().contiguous() for t in tensors]
        works = [
            dist.isend(_header(tensors), dst, group=self._ctrl, tag=tag)
        ]
        works += [dist.isend(t, dst, tag=tag) for t in tensors]
        if wait:
            for work in works:
                self._wait(work)
            return
        self._sends.append((works, tensors))
        while len(self._sends) > self.max_in_flight:
            self._finish_send()

    def _finish_send(self) -> None:
        works, _ = self._sends.pop(0)
        for work in works:
            self._wait(work)

    def _recv(self, src: int, tag: int,
              device: torch.device) -> List[torch.Tensor]:
        header = torch.zeros(_HEADER, dtype=torch.long)
        self._wait(dist.irecv(header, src, group=self._ctrl, tag=tag))
        tensors = _empty_like_header(header, device)
        works = [dist.irecv(t, src, tag=tag) for t in tensors]
        for work in works:
            self._wait(work)
        return tensors

    def flush(self) -> None:
        """Wait until the next stage has received everything sent to it."""
        while self._sends:
            self._finish_send()

    def _notify(self, exc: BaseException) -> None:
        """Tell every other rank that this one failed, and why."""
        kind = type(exc).__name__
        if kind not in _FORWARDED:
            kind = 'PipelineStoppedError'
        rank = dist.get_rank()
        self._report(
            f'{kind}\nrank {rank} (stage {self.stage}, replica '
            f'{self.replica}, local modules {self.modules.start}..'
            f'{self.modules.stop - 1}) failed, so every rank stopped: '
            f'{type(exc).__name__}: {exc}',
            [r for r in range(dist.get_world_size()) if r != rank])

    def _report(self, text: str, ranks: Sequence[int]) -> None:
        data = text.encode()[:_CTRL_BYTES]
        buf = torch.zeros(_CTRL_BYTES, dtype=torch.uint8)
        buf[:len(data)] = torch.tensor(list(data), dtype=torch.uint8)
        works = [
            dist.isend(buf, r, group=self._alarm_group, tag=_TAG_CTRL)
            for r in ranks
        ]
        for work in works:  # each listener has a receive posted
            try:
                work.wait()
            except RuntimeError:  # that rank is gone already
                pass

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """Stop every rank, with the reason, when one fails.

        A rank that fails reports why to all others before it raises. A
        rank that then fails in a wait on it (its connection closed)
        raises the reported reason instead of gloo's error.
        """
        try:
            self._check_stop()
            yield
        except BaseException as exc:
            if getattr(exc, '_pipeline_forwarded', False):
                raise
            if self._failure is not None or (
                    isinstance(exc, RuntimeError)
                    and 'onnection' in str(exc)
                    and self._reported.wait(timeout=10.)):
                self._raise_reported(exc)
            self._notify(exc)
            raise

    def close(self) -> None:
        """End the pipeline cleanly (every rank, when training ends): wait
        for the outstanding messages and stop the report listener."""
        if self._closed:
            return
        self._closed = True
        with self._guard():
            self.flush()
            rank, world = dist.get_rank(), dist.get_world_size()
            if world > 1:
                self._report('done', [(rank + 1) % world])
            while self._listener.is_alive():
                self._listener.join(timeout=0.1)
                self._check_stop()

    # --------------------------------------------------------------- train
    def train_step(self, data: Union[dict, tuple, list, None],
                   optim_wrapper: LocalOptimWrapper) -> Dict[str, Any]:
        """This stage's share of one iteration.

        The first stage preprocesses ``data``; the others receive the
        previous stage's output (``data`` is ignored). The stage runs the
        classifier's ``local_steps`` over its own modules, back-propagates
        each loss at once, sends its last module's output on as soon as it
        exists, and ends the iteration with one optimizer step over its own
        parameters (their gradients averaged over the replicas).

        Args:
            data (dict | tuple | list | None): A batch (first stage).
            optim_wrapper (LocalOptimWrapper): The optimizer wrapper.

        Returns:
            dict: The stage's log variables (rank 0 adds those of the other
            stages of its replica, see :meth:`_gather_logs`).
        """
        check_local_optim_wrapper(optim_wrapper, 'LocalPipelineParallel')
        self._check_optim_wrapper(optim_wrapper)
        if not self.hook_attached:
            raise InputError(
                'LocalPipelineParallel needs LocalPipelineHook: add '
                "dict(type='LocalPipelineHook') to custom_hooks (it gathers "
                "the stages' weights before checkpoints and the export)")
        with self._guard(), optim_wrapper.sync_group(self.stage_group):
            if self._ddp is not None:
                log_vars = self._ddp[0].train_step(data, optim_wrapper)
            else:
                log_vars = self.stage_train_step(data, optim_wrapper)
            self._iteration += 1
            return self._gather_logs(log_vars)

    @staticmethod
    def _check_optim_wrapper(optim_wrapper: LocalOptimWrapper) -> None:
        from auglocal_det.engine.optim_wrappers import (
            LayerwiseLocalOptimWrapper,
        )
        if isinstance(optim_wrapper, LayerwiseLocalOptimWrapper):
            raise InputError(
                'LocalPipelineParallel steps each stage once per iteration; '
                "set optim_wrapper.type='LocalOptimWrapper' (a stage "
                'updates its modules while the next stage computes anyway)')
        clip = optim_wrapper.clip_grad_kwargs if hasattr(
            optim_wrapper, 'clip_grad_kwargs') else {}
        if clip and clip.get('type', 'norm') == 'norm':
            raise InputError(
                'optim_wrapper.clip_grad by norm clips with the norm over '
                'all parameters, which spans every pipeline stage; use '
                "clip_grad=dict(type='value', clip_value=...) or none")

    def stage_train_step(self, data: Any,
                         optim_wrapper: LocalOptimWrapper) -> Dict[str, Any]:
        """The stage's iteration (called directly, or by the stage's
        data-parallel wrapper)."""
        from auglocal_det.models.aux_heads import AuxBatch
        model = self.module
        device = next(model.parameters()).device
        if self.stage == 0:
            with optim_wrapper.optim_context(model):
                data = model.data_preprocessor(data, True)
            inputs = data.pop('inputs')
            batch = model._aux_batch(inputs, data['data_samples'])
        else:
            received = self._recv(self._prev, _TAG_TRAIN, device)
            inputs, labels = received[0], received[1]
            images = received[2] if len(received) > 2 else None
            batch = AuxBatch(labels=labels, images=images)
            del received, images
        log_vars: Dict[str, torch.Tensor] = OrderedDict(loss=None)
        total = inputs.new_zeros((), dtype=torch.float32)
        steps = model.local_steps(inputs, batch, modules=self.modules)
        del inputs  # held by the stage's first module only while needed
        while True:
            with optim_wrapper.optim_context(model):
                step = next(steps, None)
            if step is None:
                break
            if step.index == self.modules.stop - 1 and \
                    self._next is not None:
                out = [step.output, batch.labels]
                if self._needs_images:
                    out.append(batch.images)
                self._send(out, self._next, _TAG_TRAIN)
            optim_wrapper.backward(
                step.loss, params=step.params, name=step.name)
            step_log = model.step_log(step, batch.labels)
            log_vars.update(step_log)
            total = total + step.loss.detach().float()
            del step
        optim_wrapper.finish_iteration()
        log_vars['loss'] = total
        return log_vars

    def _gather_logs(self, log_vars: Dict[str, Any]) -> Dict[str, Any]:
        """Bring the log variables of replica 0's stages to rank 0.

        Stage s sends its values of every iteration to rank 0, which posts
        the receive at once and adds the values of iteration
        t - s * (max_in_flight + 1) to its own of iteration t: stage s can
        be that far behind the first stage when the sends are not holding
        the first stage back, so the log shows every module's loss and
        accuracy without making rank 0 wait for the other stages (a wait
        that would couple the stages tighter than the sends do). The keys
        travel once, on the first iteration.
        """
        if self.replica != 0 or self.num_stages == 1:
            return log_vars
        keys = [k for k in log_vars if k != 'loss']
        values = torch.stack(
            [log_vars[k].detach().float().cpu() for k in keys] +
            [log_vars['loss'].detach().float().cpu()])
        if self.stage > 0:
            if self._log_keys is None:
                dist.send_object_list([keys], 0, group=self._ctrl)
                self._log_keys = [keys]
            self._pending_logs.append((dist.isend(
                values, 0, group=self._ctrl, tag=_TAG_LOG), values))
            while len(self._pending_logs) > self.num_stages:
                work, _ = self._pending_logs.pop(0)
                self._wait(work)
            return log_vars
        if self._log_keys is None:
            self._log_keys = [keys]
            for s in range(1, self.num_stages):
                obj = [None]
                dist.recv_object_list(obj, s, group=self._ctrl)
                self._log_keys.append(obj[0])
        self._log_iter += 1
        out = OrderedDict(log_vars)
        total = log_vars['loss'].detach().float().cpu()
        for s in range(1, self.num_stages):
            stage_keys = self._log_keys[s]
            buf = torch.zeros(len(stage_keys) + 1)
            self._log_recvs.setdefault(s, []).append(
                (dist.irecv(buf, s, group=self._ctrl, tag=_TAG_LOG), buf))
            if self._log_iter - self._log_lag(s) < 1:
                continue  # the values of an earlier iteration come later
            work, buf = self._log_recvs[s].pop(0)
            self._wait(work)
            out.update(zip(stage_keys, buf[:-1]))
            total = total + buf[-1]
        out['loss'] = total
        return out

    def _log_lag(self, stage: int) -> int:
        """Iterations by which rank 0's log trails stage ``stage``'s."""
        return stage * (self.max_in_flight + 1)

    def drain_logs(self) -> None:
        """Receive the log messages of the last iterations (rank 0), and
        wait for ours to be received (other stages of replica 0)."""
        if self.replica != 0 or self.num_stages == 1 or \
                self._log_keys is None:
            return
        if self.stage > 0:
            for work, _ in self._pending_logs:
                self._wait(work)
            self._pending_logs = []
            return
        for recvs in self._log_recvs.values():
            for work, _ in recvs:
                self._wait(work)
        self._log_recvs = {}
        self._log_iter = 0

    # ---------------------------------------------------------- validation
    @torch.no_grad()
    def val_step(self, data: Union[dict, tuple, list]) -> list:
        """Predictions of the whole network for this rank's batch.

        Every rank has a batch of its own (the validation sampler shards
        over all ranks). The batches of a replica's ranks go through the
        stages one after another: each goes to the first stage, through
        every stage (each adds its heads' predictions) and back, as
        predictions, to the rank it came from.

        Args:
            data (dict | tuple | list): A batch from the data loader.

        Returns:
            list[ClsDataSample]: The samples with the network's and every
            auxiliary head's predictions, as the classifier's ``predict``.
        """
        with self._guard():
            return self._forward_all(data)

    def test_step(self, data: Union[dict, tuple, list]) -> list:
        """Same as :meth:`val_step`."""
        return self.val_step(data)

    def _forward_all(self, data: Union[dict, tuple, list]) -> list:
        self.flush()
        model = self.module
        device = next(model.parameters()).device
        data = model.data_preprocessor(data, False)
        own_inputs = data['inputs']
        first, last = self._first, self._first + self.num_stages - 1
        rank = dist.get_rank()
        result = None
        for src in range(self.num_stages):
            src_rank = self._first + src
            if self.stage == src and src != 0:
                self._send([own_inputs], first, _TAG_VAL, wait=False)
            if self.stage == 0:
                feat = own_inputs if src == 0 else self._recv(
                    src_rank, _TAG_VAL, device)[0]
                labels: List[torch.Tensor] = []
            else:
                received = self._recv(self._prev, _TAG_VAL, device)
                feat, labels = received[0], received[1:]
            feats = list(model.forward_modules(feat, self.modules))
            scores, aux_labels = model.module_predictions(
                feats, self.modules)
            labels = list(labels) + aux_labels
            if self._next is not None:
                self._send([feats[-1]] + labels, self._next, _TAG_VAL)
            elif src_rank == rank:
                result = (scores, labels)
            else:
                self._send([scores] + labels, src_rank, _TAG_VAL)
            if self.stage == src and rank != last:
                received = self._recv(last, _TAG_VAL, device)
                result = (received[0], received[1:])
            self.flush()
        scores, aux_labels = result
        return model.fill_predictions(scores, aux_labels,
                                      data.get('data_samples'))

    def forward(self, *args, **kwargs) -> Any:
        """Call the wrapped model (the whole network, on this rank)."""
        return self.module(*args, **kwargs)

    # --------------------------------------------------------------- state
    def gather_state(self, optim_wrapper: Optional[Any] = None) -> None:
        """Copy the weights, buffers and optimizer state of the other
        stages of replica 0 to rank 0, which then holds the whole trained
        network (for a checkpoint or an export). Call it on every rank.

        Args:
            optim_wrapper (OptimWrapper, optional): Also gather the
                optimizer state of its parameters. Defaults to None.
        """
        with self._guard():
            self._gather_state(optim_wrapper)

    def _gather_state(self, optim_wrapper: Optional[Any]) -> None:
        self.flush()
        if self.replica != 0 or self.num_stages == 1:
            return
        state = self.module.state_dict(keep_vars=True)
        params = self._optim_params(optim_wrapper)
        if self.stage > 0:
            optim_state = {}
            if optim_wrapper is not None:
                opt = optim_wrapper.optimizer
                owned = {id(p) for p in self._stage[0].parameters()}
                for index, param in enumerate(params):
                    if id(param) in owned and param in opt.state:
                        optim_state[index] = {
                            k: (v.detach().cpu(), v.device.type == 'cpu')
                            if torch.is_tensor(v) else (v, None)
                            for k, v in opt.state[param].items()
                        }
            payload = dict(
                state={
                    name: state[name].detach().cpu()
                    for name in self._owned
                },
                optim=optim_state)
            dist.send_object_list([payload], 0, group=self._ctrl)
            return
        for src in range(1, self.num_stages):
            obj = [None]
            dist.recv_object_list(obj, src, group=self._ctrl)
            payload = obj[0]
            with torch.no_grad():
                for name, value in payload['state'].items():
                    state[name].copy_(value)
            if optim_wrapper is None:
                continue
            opt = optim_wrapper.optimizer
            for index, entry in payload['optim'].items():
                param = params[index]
                opt.state[param] = {
                    k: v if on_cpu is None else
                    (v if on_cpu else v.to(param.device))
                    for k, (v, on_cpu) in entry.items()
                }

    @staticmethod
    def _optim_params(optim_wrapper: Optional[Any]) -> List[nn.Parameter]:
        if optim_wrapper is None:
            return []
        return [
            p for group in optim_wrapper.optimizer.param_groups
            for p in group['params']
        ]

    def release_foreign_state(self, optim_wrapper: Any) -> None:
        """Drop the optimizer state of parameters of other stages (loaded
        from a checkpoint, or gathered for one): this stage never uses it.
        """
        owned = {id(p) for p in self._stage[0].parameters()}
        opt = optim_wrapper.optimizer
        for param in self._optim_params(optim_wrapper):
            if id(param) not in owned:
                opt.state.pop(param, None)
