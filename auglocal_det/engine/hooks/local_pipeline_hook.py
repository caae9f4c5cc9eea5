"""The Runner's side of pipelined training (see ``LocalPipelineParallel``).
"""
import itertools
from typing import Any, Optional

from mmengine.hooks import CheckpointHook, Hook

from auglocal_det.engine.model_wrappers import LocalPipelineParallel
from auglocal_det.errors import InputError
from auglocal_det.registry import HOOKS

__all__ = ['LocalPipelineHook']


class _NoBatches:
    """Stands for the training loader on stages that do not read data.

    It has the loader's length and sampler (the loop counts iterations and
    the seed hook sets the sampler's epoch) and yields None as batches.
    """

    def __init__(self, loader: Any) -> None:
        self.sampler = loader.sampler
        self.dataset = loader.dataset
        self.batch_sampler = None  # a resumed epoch skips by iterating
        self._len = len(loader)

    def __len__(self) -> int:
        return self._len

    def __iter__(self):
        return itertools.repeat(None, self._len)


@HOOKS.register_module()
class LocalPipelineHook(Hook):
    """Keep the Runner's jobs working under ``LocalPipelineParallel``.

    Does nothing for other models. Otherwise:

    - before training, checks that the training sampler shards over the
      replicas, gives the stages other than the first an empty loader (only
      the first stage of a replica reads data);
    - before every checkpoint that a ``CheckpointHook`` is about to write
      (before every validation when it keeps the best checkpoint) and
      before the export at the end of training, copies the other stages'
      weights and optimizer state to rank 0
      (:meth:`LocalPipelineParallel.gather_state`; the pipeline's next
      iteration releases them);
    - before validation and at the end of training, receives the last
      iterations' log messages;
    - after the run, ends the pipeline on every rank.

    ``LocalPipelineParallel`` configs add it to ``custom_hooks``.
    """

    priority = 'LOW'  # before CheckpointHook and ExportBackboneHook

    @staticmethod
    def _pipeline(runner) -> Optional[Any]:
        model = runner.model
        return model if isinstance(model, LocalPipelineParallel) else None

    def before_train(self, runner) -> None:
        pipe = self._pipeline(runner)
        if pipe is None:
            return
        loop = runner.train_loop
        sampler = getattr(loop.dataloader, 'sampler', None)
        stages = getattr(sampler, 'num_stages', None)
        replicas = getattr(sampler, 'world_size', None)
        if stages is not None and stages != pipe.num_stages or \
                stages is None and replicas != pipe.num_replicas:
            raise InputError(
                'under LocalPipelineParallel the training data must be '
                'sharded over the replicas, not over all processes: set '
                "train_dataloader.sampler=dict(type='PipelineSampler', "
                f'num_stages={pipe.num_stages})')
        pipe.hook_attached = True
        if pipe.stage > 0:
            loop.dataloader = _NoBatches(loop.dataloader)

    @staticmethod
    def _checkpoint_hooks(runner):
        return [h for h in runner.hooks if isinstance(h, CheckpointHook)]

    def after_train_iter(self, runner, batch_idx: int,
                         data_batch: Any = None,
                         outputs: Optional[dict] = None) -> None:
        pipe = self._pipeline(runner)
        if pipe is None:
            return
        if any(not h.by_epoch and (
                h.every_n_train_iters(runner, h.interval, h.save_begin) or
                h.save_last and h.is_last_train_iter(runner))
               for h in self._checkpoint_hooks(runner)):
            pipe.gather_state(runner.optim_wrapper)

    def after_train_epoch(self, runner) -> None:
        pipe = self._pipeline(runner)
        if pipe is None:
            return
        if any(h.by_epoch and (
                h.every_n_epochs(runner, h.interval, h.save_begin) or
                h.save_last and h.is_last_train_epoch(runner))
               for h in self._checkpoint_hooks(runner)):
            pipe.gather_state(runner.optim_wrapper)

    def before_val_epoch(self, runner) -> None:
        pipe = self._pipeline(runner)
        if pipe is None:
            return
        pipe.drain_logs()
        # a best checkpoint is written after any validation, whichever loop
        if any(h.save_best is not None
               for h in self._checkpoint_hooks(runner)):
            pipe.gather_state(runner.optim_wrapper)

    def after_train(self, runner) -> None:
        pipe = self._pipeline(runner)
        if pipe is not None:
            pipe.drain_logs()
            pipe.gather_state(runner.optim_wrapper)

    def after_run(self, runner) -> None:
        pipe = self._pipeline(runner)
        if pipe is not None:
            pipe.close()
