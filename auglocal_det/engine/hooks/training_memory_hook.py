"""Training memory of one steady-state iteration, read from the process.

The figures come from the kernel's accounting of the training process
(``/proc/self/status``), so they hold for every rule alike and need no
tracking of tensors:

- before the measured iteration the hook writes ``5`` to
  ``/proc/self/clear_refs``, which resets the peak resident set size
  (``VmHWM``) to the current one, and reads ``VmRSS``: what is alive before
  the iteration (parameters, buffers, optimizer state, and the process's
  libraries and caches);
- an optimizer step pre-hook reads ``VmHWM`` when forward and backward are
  done, and counts the gradient bytes then alive;
- after the iteration it reads ``VmHWM`` again: the peak of the whole
  iteration, optimizer step included.

Freed memory goes back to the system only for blocks the allocator maps on
their own, so the figures are those of glibc's ``malloc`` with
``MALLOC_MMAP_THRESHOLD_=65536``: every block of 64 KiB or more is mapped
alone and unmapped when freed. Mapping each block costs page faults on
every iteration, a large share of the CPU time of a ResNet-34 with AugLocal
heads, so the hook sets that threshold with ``mallopt`` only from the start
of training to the end of the measured iteration, then raises it to 32 MiB
(the largest value glibc's own adaptive threshold reaches). A threshold
the user set in the environment is left alone.
"""
import os
import os.path as osp
from typing import Dict, Optional

import torch
from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper

from auglocal_det.errors import InputError
from auglocal_det.fileio import save_json_atomic
from auglocal_det.process_memory import (
    MMAP_THRESHOLD_ENV,
    RSS_MMAP_THRESHOLD,
    read_proc_status,
    reset_peak_rss,
    set_mmap_threshold,
)
from auglocal_det.registry import HOOKS

__all__ = ['TrainingMemoryHook']

MIB = 2.**20


def _tensor_bytes(tensors) -> int:
    """Bytes of the distinct storages among ``tensors``."""
    seen, total = set(), 0
    for t in tensors:
        if not isinstance(t, torch.Tensor):
            continue
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key in seen or key == 0:
            continue
        seen.add(key)
        total += storage.nbytes()
    return total


@HOOKS.register_module()
class TrainingMemoryHook(Hook):
    """Log the memory of one training iteration of a steady state.

    At iteration ``measure_iter`` (0-based; the default measures the third
    iteration, when the optimizer state exists and every lazy buffer is
    allocated) the hook logs, in MiB, into the run's scalars
    (``memory/...`` in the visualizer's ``scalars.json``), into the log and
    into ``<work_dir>/training_memory.json``:

    - ``peak_rss``: the process's peak resident set size during the
      iteration (forward, backward and optimizer step): the peak training
      memory;
    - ``before_rss``: the resident set size before the iteration;
    - ``activation_rss``: the peak before the optimizer step, minus
      ``before_rss``, minus the gradients alive at the step: the
      activations the autograd graph keeps and the temporaries of forward
      and backward, where local learning saves;
    - ``params``, ``grads``, ``optim_state``: bytes of the parameters and
      buffers, of the gradients at the step and of the optimizer state,
      counted from the tensors.

    Args:
        measure_iter (int): The iteration measured. Defaults to 2.
        mmap_threshold (int, optional): glibc's mmap threshold (bytes) up
            to the end of the measured iteration, unless
            ``MALLOC_MMAP_THRESHOLD_`` is set; None leaves ``malloc`` alone.
            Defaults to 65536.
        after_threshold (int): The threshold after the measured iteration.
            Defaults to 32 MiB.
    """

    priority = 'LOW'

    def __init__(self,
                 measure_iter: int = 2,
                 mmap_threshold: Optional[int] = RSS_MMAP_THRESHOLD,
                 after_threshold: int = 32 * 2**20) -> None:
        if measure_iter < 1:
            raise InputError(
                f'TrainingMemoryHook: measure_iter must be >= 1 (the first '
                f'iteration creates the optimizer state), got '
                f'{measure_iter}')
        self.measure_iter = measure_iter
        self.mmap_threshold = mmap_threshold
        self.after_threshold = after_threshold
        self._malloc_set = False
        self._active = False
        self._before: Optional[int] = None
        self._at_step: Optional[Dict[str, int]] = None
        self._handle = None
        self.result: Optional[Dict[str, float]] = None

    @staticmethod
    def _model(runner):
        model = runner.model
        return model.module if is_model_wrapper(model) else model

    def before_train(self, runner) -> None:
        if not osp.isfile('/proc/self/status'):
            print_log(
                'TrainingMemoryHook: /proc/self/status is missing; no '
                'memory figures on this system', logger='current')
            return
        if (self.mmap_threshold is not None
                and MMAP_THRESHOLD_ENV not in os.environ
                and runner.iter <= self.measure_iter):
            self._malloc_set = set_mmap_threshold(self.mmap_threshold)
        optimizer = getattr(runner.optim_wrapper, 'optimizer', None)
        if optimizer is None:
            print_log(
                'TrainingMemoryHook: the optim wrapper has no single '
                'optimizer; only the peak of the whole iteration is '
                'measured', logger='current')
            return
        self._handle = optimizer.register_step_pre_hook(self._at_step_hook)

    def _at_step_hook(self, optimizer, args, kwargs) -> None:
        if not self._active or self._at_step is not None:
            return
        status = read_proc_status()
        grads = [
            p.grad for group in optimizer.param_groups
            for p in group['params'] if p.grad is not None
        ]
        self._at_step = dict(hwm=status['VmHWM'], grads=_tensor_bytes(grads))

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch=None) -> None:
        if runner.iter != self.measure_iter or not osp.isfile(
                '/proc/self/status'):
            return
        try:
            reset_peak_rss()
        except OSError:
            print_log(
                'TrainingMemoryHook: /proc/self/clear_refs is not writable; '
                'no memory figures', logger='current')
            return
        self._active = True
        self._at_step = None
        self._before = read_proc_status()['VmRSS']

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        if not self._active:
            return
        self._active = False
        peak = read_proc_status()['VmHWM']
        if self._malloc_set:
            set_mmap_threshold(self.after_threshold)
            self._malloc_set = False
        model = self._model(runner)
        optimizer = getattr(runner.optim_wrapper, 'optimizer', None)
        state = []
        if optimizer is not None:
            for value in optimizer.state.values():
                state.extend(value.values())
        result = dict(
            iteration=runner.iter,
            peak_rss=peak / MIB,
            before_rss=self._before / MIB,
            params=_tensor_bytes(
                list(model.parameters()) + list(model.buffers())) / MIB,
            optim_state=_tensor_bytes(state) / MIB)
        if self._at_step is not None:
            grads = self._at_step['grads']
            result.update(
                grads=grads / MIB,
                activation_rss=max(0, self._at_step['hwm'] - self._before -
                                   grads) / MIB)
        self.result = result
        runner.visualizer.add_scalars(
            {f'memory/{k}': v
             for k, v in result.items() if k != 'iteration'},
            step=runner.iter + 1)
        print_log(
            'training memory (process RSS, MiB) at iteration '
            f'{runner.iter}: peak {result["peak_rss"]:.1f}, before '
            f'{result["before_rss"]:.1f}, activations '
            f'{result.get("activation_rss", float("nan")):.1f}; tensors: '
            f'params+buffers {result["params"]:.1f}, grads '
            f'{result.get("grads", float("nan")):.1f}, optimizer state '
            f'{result["optim_state"]:.1f}',
            logger='current')
        if is_main_process():
            save_json_atomic(result,
                             osp.join(runner.work_dir, 'training_memory.json'))

    def after_train(self, runner) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
