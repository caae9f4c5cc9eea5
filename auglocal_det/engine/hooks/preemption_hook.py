"""Save a checkpoint and stop cleanly when the job is pre-empted.

Cluster schedulers stop a job with a signal and kill it a grace period
later: SLURM sends SIGTERM on pre-emption or ``scancel`` (and, with
``--signal=USR1@SECONDS``, SIGUSR1 that long before the time limit);
Kubernetes and most other schedulers send SIGTERM. Without a handler the
process dies at once and everything trained since the last checkpoint is
lost, up to a whole ImageNet epoch.

:class:`PreemptionCheckpointHook` turns such a signal into a flag. After
every training iteration the processes agree on the flag with one
collective over the default process group (a ``max`` all-reduce, so a
signal seen by one rank stops every rank at the same iteration, whichever
wrapper or pipeline runs the iteration). When it is set, the hook writes
an atomic checkpoint of the finished iteration (the exact mid-epoch
resume of :class:`~auglocal_det.engine.runner.ResumableEpochBasedTrainLoop`
continues from it), names it in ``last_checkpoint``, logs one line and
stops the process with :data:`EXIT_PREEMPTED` (75, ``EX_TEMPFAIL``: try
again), which ``tools/slurm_train.sh`` reads to requeue the job.
"""
import os.path as osp
import signal
import threading
from typing import Dict, Optional, Sequence, Union

import torch
from mmengine.dist import all_reduce, barrier, get_dist_info, is_main_process
from mmengine.hooks import CheckpointHook, Hook

from auglocal_det.engine.model_wrappers import LocalPipelineParallel
from auglocal_det.errors import InputError
from auglocal_det.registry import HOOKS

from .atomic_checkpoint_hook import BACKEND_NAME, atomic_write_bytes

__all__ = ['PreemptionCheckpointHook', 'TrainingPreempted', 'EXIT_PREEMPTED']

#: Exit status of a process stopped by a pre-emption signal after saving
#: its checkpoint (``os.EX_TEMPFAIL``).
EXIT_PREEMPTED = 75


class TrainingPreempted(SystemExit):
    """Training stopped on a pre-emption signal; its checkpoint is saved.

    A :class:`SystemExit` whose code is :data:`EXIT_PREEMPTED`, so that the
    process ends with that status and no traceback.
    """


def _signal_number(sig: Union[str, int]) -> int:
    if isinstance(sig, int):
        return sig
    name = str(sig).upper()
    number = getattr(signal, name, None) if name.startswith('SIG') and \
        not name.startswith('SIG_') else None
    if not isinstance(number, int):
        raise InputError(
            f'PreemptionCheckpointHook: unknown signal {sig!r} in '
            "default_hooks.preemption.signals (use names such as 'SIGTERM', "
            "'SIGUSR1')")
    return int(number)


@HOOKS.register_module()
class PreemptionCheckpointHook(Hook):
    """Checkpoint and exit with status 75 on SIGTERM or SIGUSR1.

    The current iteration is finished first. The checkpoint is written by
    the run's iteration-based :class:`~mmengine.hooks.CheckpointHook` (so
    that it takes part in ``max_keep_ckpts``) or, with an epoch-based one,
    as ``iter_<N>.pth`` in the same folder, through the atomic file
    backend of :class:`AtomicCheckpointHook` in both cases.

    Args:
        signals (Sequence[str | int]): The signals that mean "pre-empted".
            Defaults to ('SIGTERM', 'SIGUSR1').
        interval (int): Check the flag every ``interval`` iterations (one
            all-reduce of one number under data parallelism). Defaults
            to 1.
        exit_code (int): Exit status after the checkpoint is saved.
            Defaults to :data:`EXIT_PREEMPTED` (75).

    Examples:
        >>> default_hooks = dict(
        ...     preemption=dict(type='PreemptionCheckpointHook'))
    """

    priority = 'LOWEST'  # after the iteration's logging and checkpoint

    def __init__(self,
                 signals: Sequence[Union[str, int]] = ('SIGTERM', 'SIGUSR1'),
                 interval: int = 1,
                 exit_code: int = EXIT_PREEMPTED) -> None:
        if int(interval) < 1:
            raise InputError('PreemptionCheckpointHook: interval must be '
                             f'at least 1, got {interval}')
        self.signals = [_signal_number(s) for s in signals]
        self.interval = int(interval)
        self.exit_code = int(exit_code)
        self._received = 0
        self._previous: Dict[int, object] = {}

    # -------------------------------------------------------------- signals
    def _on_signal(self, signum: int, frame) -> None:
        self._received = signum

    def before_train(self, runner) -> None:
        """Install the signal handlers (main thread only)."""
        self._received = 0
        if threading.current_thread() is not threading.main_thread():
            runner.logger.warning(
                'PreemptionCheckpointHook: training does not run in the '
                'main thread, so pre-emption signals are not handled')
            return
        for signum in self.signals:
            self._previous[signum] = signal.signal(signum, self._on_signal)

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def after_train(self, runner) -> None:
        """Give the signals back to their previous handlers."""
        self._restore_handlers()

    # ------------------------------------------------------------ agreement
    def preempted(self) -> int:
        """The pre-emption signal any process received (0: none).

        A collective: every process of the default group must call it.
        """
        flag = torch.tensor([self._received], dtype=torch.int64)
        if get_dist_info()[1] > 1:
            all_reduce(flag, op='max')
        return int(flag.item())

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch=None,
                         outputs: Optional[dict] = None) -> None:
        """Save and stop if any process received a pre-emption signal."""
        if not self.every_n_train_iters(runner, self.interval):
            return
        signum = self.preempted()
        if not signum:
            return
        path = self._save(runner)
        barrier()  # every rank waits for the checkpoint before exiting
        self._restore_handlers()
        name = signal.Signals(signum).name
        loop = runner.train_loop
        per_epoch = len(loop.dataloader) if hasattr(loop, 'dataloader') \
            else None
        where = (f'epoch {runner.epoch + 1}, batch {batch_idx + 1} of '
                 f'{per_epoch}' if per_epoch else f'epoch {runner.epoch + 1}')
        runner.logger.warning(
            f'Pre-empted by {name}: stopped after iteration '
            f'{runner.iter + 1} ({where}) and saved {path!r} (named in '
            f'last_checkpoint); continue with `tools/train.py CONFIG '
            f'--resume`. Exiting with status {self.exit_code}.')
        raise TrainingPreempted(self.exit_code)

    # ----------------------------------------------------------------- save
    @staticmethod
    def _checkpoint_hook(runner) -> Optional[CheckpointHook]:
        for hook in runner.hooks:
            if isinstance(hook, CheckpointHook):
                return hook
        return None

    @staticmethod
    def _gather(runner) -> None:
        """Under ``LocalPipelineParallel``, the whole network on rank 0
        (every rank takes part)."""
        if isinstance(runner.model, LocalPipelineParallel):
            runner.model.gather_state(runner.optim_wrapper)

    def _save(self, runner) -> str:
        """Write the checkpoint of the finished iteration; its path."""
        step = runner.iter + 1
        hook = self._checkpoint_hook(runner)
        if hook is not None and not hook.by_epoch and \
                getattr(hook, '_atomic', False):
            path = hook.file_backend.join_path(hook.out_dir,
                                               hook.filename_tmpl.format(step))
            if runner.message_hub.get_info('last_ckpt') != path:
                self._gather(runner)
                hook._save_checkpoint_with_step(runner, step, dict())
            return path
        self._gather(runner)
        out_dir = runner.work_dir
        if hook is not None and '://' not in str(hook.out_dir):
            out_dir = str(hook.out_dir)
        filename = f'iter_{step}.pth'
        path = osp.join(out_dir, filename)
        runner.save_checkpoint(
            out_dir,
            filename,
            by_epoch=False,
            backend_args=dict(backend=BACKEND_NAME))
        if is_main_process():
            atomic_write_bytes(
                osp.join(runner.work_dir, 'last_checkpoint'),
                path.encode('utf-8'))
        return path
