"""An epoch-based training loop whose ``--resume`` equals an uninterrupted
run.

What MMEngine 0.10.7 does on ``--resume``: ``Runner.resume`` restores the
model, the optimizer (with the AMP loss scaler), the parameter schedulers,
the message hub and the epoch and iteration counters, but

- :class:`~mmengine.runner.EpochBasedTrainLoop` restarts the current epoch
  from its first batch. With a checkpoint written in the middle of an
  epoch (``CheckpointHook(by_epoch=False)``, or any iteration-based
  interval) the batches already trained in that epoch are trained again,
  the epoch gets more iterations than it should and the iteration counter
  runs past ``max_iters``;
- the random number generators are re-seeded from the config's seed, not
  restored, so the data augmentation and any randomness in the model
  differ from the uninterrupted run.

:class:`ResumableEpochBasedTrainLoop` fixes both:

- **Data position.** At the start of every epoch it records in the message
  hub (hence in every checkpoint) the epoch, the iteration it started at
  and its number of batches. Resumed in the middle of an epoch, it skips
  the batches already trained by wrapping the data loader's batch sampler
  (the skipped batches are never loaded; the sampler's order is the same
  because the sampler is seeded with ``seed + epoch``). If the number of
  batches per epoch changed (batch size, data set or number of GPUs), a
  mid-epoch position is meaningless and it stops with an error instead.
- **Randomness.** Before fetching the batch of iteration ``i`` it seeds
  Python's, NumPy's and torch's (CPU and CUDA) generators from
  ``(seed, i)``. The random state of every iteration is thus a function of
  the seed and the iteration alone, and a resumed run draws exactly the
  numbers the uninterrupted run drew, whatever happened in between
  (validation, hooks, process restarts). Nothing needs to be stored in the
  checkpoint for it.

Limitation: with ``num_workers > 0`` the augmentation runs in worker
processes seeded by MMEngine's ``worker_init_fn``, whose random state is
not that of the main process; data order, model, optimizer, schedule and
main-process randomness still resume exactly, the worker-side
augmentation only statistically.
"""
import itertools
import logging
import random
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from mmengine.logging import print_log
from mmengine.runner import EpochBasedTrainLoop
from torch.utils.data import DataLoader, IterableDataset

from auglocal_det.errors import InputError
from auglocal_det.registry import LOOPS

__all__ = ['ResumableEpochBasedTrainLoop', 'iteration_seeds']

#: Message-hub key of the current epoch's position (saved in checkpoints).
EPOCH_INFO_KEY = 'train_epoch_start'


def iteration_seeds(seed: int, iteration: int) -> Tuple[int, int, int]:
    """Seeds of Python's, NumPy's and torch's generators for an iteration.

    Derived with NumPy's :class:`~numpy.random.SeedSequence` from
    ``(seed, iteration)``, so neighbouring iterations get unrelated
    streams.

    Args:
        seed (int): The run's seed (``runner.seed``).
        iteration (int): The global iteration index.

    Returns:
        tuple[int, int, int]: Seeds for ``random``, ``numpy.random`` (below
        2**32) and ``torch`` (below 2**64).
    """
    words = np.random.SeedSequence(
        [int(seed) % (1 << 64), int(iteration)]).generate_state(4)
    return (int(words[0]), int(words[1]),
            (int(words[2]) << 32) | int(words[3]))


def seed_everything(seeds: Tuple[int, int, int]) -> None:
    """Seed Python's, NumPy's and torch's (all devices) generators."""
    py_seed, np_seed, torch_seed = seeds
    random.seed(py_seed)
    np.random.seed(np_seed)
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        # the fast path of torch.manual_seed for a training on GPUs
        torch.default_generator.manual_seed(torch_seed)
        torch.cuda.manual_seed_all(torch_seed)
    else:
        torch.manual_seed(torch_seed)  # every device, lazily for CUDA


class _SkipBatches:
    """A batch sampler that drops the first ``skip`` batches of another.

    The wrapped sampler still produces (and discards) the skipped index
    lists, which costs no data loading.

    Args:
        batch_sampler (Iterable[list[int]]): The data loader's batch
            sampler.
        skip (int): Number of batches to drop.
    """

    def __init__(self, batch_sampler, skip: int) -> None:
        self.batch_sampler = batch_sampler
        self.skip = skip

    def __iter__(self) -> Iterator[List[int]]:
        return itertools.islice(iter(self.batch_sampler), self.skip, None)

    def __len__(self) -> int:
        return max(0, len(self.batch_sampler) - self.skip)


@LOOPS.register_module()
class ResumableEpochBasedTrainLoop(EpochBasedTrainLoop):
    """:class:`~mmengine.runner.EpochBasedTrainLoop` that resumes exactly.

    Same arguments and behaviour as MMEngine's loop, plus: a run resumed
    from a checkpoint written in the middle of an epoch continues with the
    next batch of that epoch, and, with ``seed_per_iter=True``, the random
    generators are seeded from ``(seed, iteration)`` before each
    iteration's batch is loaded, so that a resumed run equals an
    uninterrupted one (see the module docstring).

    Args:
        runner (Runner): The runner.
        dataloader (DataLoader | dict): The training data loader (config).
        max_epochs (int): Total training epochs.
        val_begin (int): The epoch that begins validating. Defaults to 1.
        val_interval (int): Validation interval. Defaults to 1.
        dynamic_intervals (list[tuple[int, int]], optional): Milestones and
            intervals of validation. Defaults to None.
        seed_per_iter (bool): Seed the generators from the run's seed and
            the iteration before every iteration. Defaults to True.

    Examples:
        >>> train_cfg = dict(
        ...     type='ResumableEpochBasedTrainLoop', max_epochs=200,
        ...     val_interval=1)
    """

    def __init__(self,
                 runner,
                 dataloader: Union[DataLoader, Dict],
                 max_epochs: int,
                 val_begin: int = 1,
                 val_interval: int = 1,
                 dynamic_intervals: Optional[List[Tuple[int, int]]] = None,
                 seed_per_iter: bool = True) -> None:
        super().__init__(
            runner,
            dataloader,
            max_epochs=max_epochs,
            val_begin=val_begin,
            val_interval=val_interval,
            dynamic_intervals=dynamic_intervals)
        self.seed_per_iter = seed_per_iter

    # ------------------------------------------------------------- position
    def _epoch_position(self) -> int:
        """Number of batches of the current epoch already trained.

        Zero except right after a resume from a mid-epoch checkpoint.
        """
        num_batches = len(self.dataloader)
        info = self.runner.message_hub.get_info(EPOCH_INFO_KEY)
        if isinstance(info, dict):
            if info.get('epoch') != self._epoch:
                return 0  # the recorded epoch was completed
            done = self._iter - int(info['iter'])
            saved = int(info['num_batches'])
            if done and saved != num_batches:
                raise InputError(
                    f'cannot resume in the middle of epoch '
                    f'{self._epoch + 1}: the checkpoint was written after '
                    f'batch {done} of {saved} of that epoch, but '
                    f'train_dataloader now has {num_batches} batches per '
                    'epoch (train_dataloader.batch_size, the training data '
                    'set or the number of GPUs changed). Restore them, or '
                    'resume from a checkpoint written at the end of an '
                    'epoch with --resume PATH')
        else:  # a fresh run, or a checkpoint written by another loop
            done = self._iter - self._epoch * num_batches
        if not 0 <= done <= num_batches:
            raise InputError(
                f'cannot resume: iteration {self._iter} does not fall in '
                f'epoch {self._epoch + 1} of {num_batches} batches '
                '(train_dataloader.batch_size, the training data set or the '
                'number of GPUs changed since the checkpoint was written)')
        return done

    def _batches(self, skip: int) -> Iterator[Sequence[dict]]:
        """An iterator over the epoch's batches from batch ``skip`` on."""
        loader = self.dataloader
        if skip == 0:
            return iter(loader)
        batch_sampler = getattr(loader, 'batch_sampler', None)
        if batch_sampler is None or isinstance(loader.dataset,
                                               IterableDataset):
            print_log(
                f'Resuming in epoch {self._epoch + 1}: loading and '
                f'discarding its first {skip} batches (the data loader has '
                'no batch sampler to skip them)',
                logger='current',
                level=logging.WARNING)
            batches = iter(loader)
            for _ in range(skip):
                next(batches)
            return batches
        print_log(
            f'Resuming in epoch {self._epoch + 1} after batch {skip} of '
            f'{len(loader)}: skipping the batches already trained',
            logger='current')
        kwargs = dict(
            batch_sampler=_SkipBatches(batch_sampler, skip),
            num_workers=loader.num_workers,
            collate_fn=loader.collate_fn,
            pin_memory=loader.pin_memory,
            timeout=loader.timeout,
            worker_init_fn=loader.worker_init_fn,
            multiprocessing_context=loader.multiprocessing_context,
            generator=loader.generator,
            pin_memory_device=getattr(loader, 'pin_memory_device', ''))
        if loader.num_workers > 0:
            kwargs['prefetch_factor'] = loader.prefetch_factor
        if hasattr(loader, 'in_order'):
            kwargs['in_order'] = loader.in_order
        return iter(DataLoader(loader.dataset, **kwargs))

    # ----------------------------------------------------------------- loop
    def run_epoch(self) -> None:
        """Iterate over the (rest of the) current epoch."""
        self.runner.call_hook('before_train_epoch')
        self.runner.model.train()
        num_batches = len(self.dataloader)
        done = self._epoch_position()
        self.runner.message_hub.update_info(
            EPOCH_INFO_KEY,
            dict(
                epoch=self._epoch,
                iter=self._iter - done,
                num_batches=num_batches))
        batches = self._batches(done)
        for idx in range(done, num_batches):
            if self.seed_per_iter:
                seed_everything(iteration_seeds(self.runner.seed, self._iter))
            try:
                data_batch = next(batches)
            except StopIteration:
                break
            self.run_iter(idx, data_batch)
        self.runner.call_hook('after_train_epoch')
        self._epoch += 1
