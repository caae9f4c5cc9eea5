"""Checkpoint saving that survives crashes and full disks.

MMEngine 0.10's :class:`~mmengine.hooks.CheckpointHook` writes a checkpoint
with a plain ``open(path, 'wb')`` (``LocalBackend.put``), deletes the oldest
kept checkpoint *before* writing the new one, and rewrites
``<work_dir>/last_checkpoint`` with a truncating ``open``. A job killed (or
a disk filling up) during a save can therefore leave a truncated newest
checkpoint, an empty ``last_checkpoint``, and one good checkpoint fewer:
``--resume`` then fails on the truncated file.

Design (the least invasive one that is correct):

- :class:`AtomicLocalBackend`, registered under the *new* backend name
  ``'atomic_local'`` (MMEngine's ``'local'`` backend is left alone, so
  nothing else changes behaviour when the package is imported), writes a
  file as a temporary file in the same directory, flushes and ``fsync``\\ s
  it, renames it over the target with :func:`os.replace` and ``fsync``\\ s
  the directory. A reader sees the old file or the complete new one, never
  a partial one; a failed write removes the temporary file and reports a
  full disk with the path and the free space.
- :class:`AtomicCheckpointHook` is :class:`~mmengine.hooks.CheckpointHook`
  with the save order fixed. For a local ``out_dir`` it passes
  ``backend_args=dict(backend='atomic_local')`` to ``Runner.save_checkpoint``
  (so every checkpoint it writes, including the best ones, is atomic), then
  rewrites ``last_checkpoint`` atomically, and only then deletes the
  checkpoints rotated out by ``max_keep_ckpts`` (and a superseded best
  checkpoint). An error while saving leaves the previous checkpoint, the
  previous ``last_checkpoint`` and the hook's bookkeeping untouched and is
  raised as :class:`CheckpointWriteError`, which names the file, the free
  space and what to do. Temporary files left by a killed job are removed
  when training starts again. Remote ``out_dir`` (``s3://`` ...) and the
  deprecated ``file_client_args`` keep MMEngine's behaviour (object stores
  publish an object atomically anyway).

``configs/_base_/default_runtime.py`` uses the hook as
``default_hooks.checkpoint``; its arguments are those of ``CheckpointHook``.
"""
import errno
import os
import os.path as osp
import re
import shutil
from collections import deque
from typing import IO, Any, Dict, List, Optional, Union

from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend, register_backend
from mmengine.hooks import CheckpointHook

from auglocal_det.errors import CheckpointWriteError
from auglocal_det.fileio import atomic_write
from auglocal_det.registry import HOOKS

__all__ = [
    'AtomicCheckpointHook', 'AtomicLocalBackend', 'CheckpointWriteError',
    'atomic_write_bytes'
]

#: Name of the registered file backend.
BACKEND_NAME = 'atomic_local'
#: Errors that mean the file system has no room for the file.
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
#: Temporary files of :func:`atomic_write` (``.<name>.<random>.tmp``).
_TEMP_RE = re.compile(r'^\..+\.[a-z0-9_]{8}\.tmp$')


def _free_space(folder: str) -> Optional[int]:
    """Free bytes on the file system of ``folder`` (None if unknown)."""
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _human(num_bytes: Optional[int]) -> str:
    """``num_bytes`` in B, KiB, MiB, GiB or TiB."""
    if num_bytes is None:
        return 'unknown'
    size, unit = float(num_bytes), ''
    for unit in ('B', 'KiB', 'MiB', 'GiB', 'TiB'):
        if size < 1024 or unit == 'TiB':
            break
        size /= 1024
    return f'{num_bytes} B' if unit == 'B' else f'{size:.1f} {unit}'


def _write_bytes(f: IO[bytes], data: bytes) -> None:
    """Write ``data`` to the open temporary file (a seam for the tests)."""
    f.write(data)


def fsync_dir(folder: str) -> None:
    """Make a rename inside ``folder`` durable (a no-op where unsupported).

    Args:
        folder (str): The directory whose entries changed.
    """
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # e.g. file systems that cannot sync a directory
    finally:
        os.close(fd)


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably.

    The bytes go to a temporary file in the same directory, which is
    flushed, synced and renamed over ``path``; the directory is then
    synced. On failure the temporary file is removed and ``path`` is left
    as it was.

    Args:
        path (str): Destination file; its directory is created if needed.
        data (bytes): The content.

    Raises:
        OSError: If the write fails. With ``errno`` ``ENOSPC`` or
            ``EDQUOT`` the message says that the disk (or quota) is full,
            names ``path`` and gives the size and the free space.
    """
    path = osp.abspath(osp.expanduser(path))
    folder = osp.dirname(path)
    try:
        atomic_write(path, lambda f: _write_bytes(f, data))
    except OSError as exc:
        if exc.errno not in _NO_SPACE:
            raise
        what = ('no space left on device' if exc.errno == errno.ENOSPC else
                'disk quota exceeded')
        raise OSError(
            exc.errno,
            f'{what} while writing {path!r} ({_human(len(data))} to write, '
            f'{_human(_free_space(folder))} free on the file system of '
            f'{folder!r}); the partial file was removed') from exc
    fsync_dir(folder)


@register_backend(BACKEND_NAME)
class AtomicLocalBackend(LocalBackend):
    """MMEngine's local file backend with atomic, durable writes.

    ``put`` and ``put_text`` go through :func:`atomic_write_bytes`; every
    other method is :class:`~mmengine.fileio.LocalBackend`'s. Registered as
    ``'atomic_local'``: select it with
    ``backend_args=dict(backend='atomic_local')``.
    """

    def put(self, obj: bytes, filepath: Union[str, os.PathLike]) -> None:
        """Write bytes to ``filepath`` atomically."""
        atomic_write_bytes(str(filepath), obj)

    def put_text(self,
                 obj: str,
                 filepath: Union[str, os.PathLike],
                 encoding: str = 'utf-8') -> None:
        """Write text to ``filepath`` atomically."""
        atomic_write_bytes(str(filepath), obj.encode(encoding))


class _DeferredRemoval:
    """A file backend whose ``remove``/``rmtree`` are only recorded."""

    def __init__(self, backend: Any, pending: List[str]) -> None:
        self._backend = backend
        self._pending = pending

    def remove(self, filepath: str) -> None:
        self._pending.append(str(filepath))

    def rmtree(self, dir_path: str) -> None:
        self._pending.append(str(dir_path))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """:class:`~mmengine.hooks.CheckpointHook` that never corrupts or loses
    the latest checkpoint.

    For a checkpoint directory on the local file system:

    1. the checkpoint is written atomically (temporary file in the same
       directory, flush, ``fsync``, :func:`os.replace`, directory
       ``fsync``);
    2. ``last_checkpoint`` is then rewritten atomically to name it;
    3. only then are the checkpoints beyond ``max_keep_ckpts`` (and a
       superseded best checkpoint) deleted.

    If writing fails (for instance the disk is full) the previous
    checkpoint and ``last_checkpoint`` are untouched, the temporary file is
    removed and :class:`CheckpointWriteError` says what happened, where,
    and what to do. Temporary files of a job killed while saving are
    removed in :meth:`before_train`.

    Args:
        **kwargs: The arguments of :class:`~mmengine.hooks.CheckpointHook`
            (``interval``, ``by_epoch``, ``max_keep_ckpts``, ``save_best``,
            ``out_dir``, ...). ``backend_args`` other than
            ``dict(backend='local')``, ``file_client_args`` or a remote
            ``out_dir`` turn the atomic saving off (MMEngine's behaviour).

    Examples:
        >>> default_hooks = dict(checkpoint=dict(
        ...     type='AtomicCheckpointHook', interval=1, max_keep_ckpts=3))
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._atomic = False

    # ---------------------------------------------------------------- setup
    def _use_atomic_backend(self, out_dir: str) -> bool:
        if self.file_client_args is not None or '://' in str(out_dir):
            return False
        args = dict(self.backend_args or {})
        if args.pop('backend', 'local') not in ('local', BACKEND_NAME):
            return False
        self.backend_args = dict(args, backend=BACKEND_NAME)
        return True

    def before_train(self, runner) -> None:
        """Select the atomic backend, then set up as ``CheckpointHook``
        does, and remove temporary files of an interrupted save.

        Args:
            runner (Runner): The runner of the training process.
        """
        out_dir = self.out_dir if self.out_dir is not None else \
            runner.work_dir
        self._atomic = self._use_atomic_backend(str(out_dir))
        super().before_train(runner)
        if self._atomic and is_main_process():
            self._remove_stale_temp_files(runner)

    def _remove_stale_temp_files(self, runner) -> None:
        for folder in {str(self.out_dir), runner.work_dir}:
            if not osp.isdir(folder):
                continue
            for name in os.listdir(folder):
                if _TEMP_RE.match(name):
                    path = osp.join(folder, name)
                    runner.logger.warning(
                        f'Removing {path!r}, the partial file of a save '
                        'that was interrupted')
                    os.remove(path)

    # ----------------------------------------------------------------- save
    def _save_checkpoint_with_step(self, runner, step: int,
                                   meta: Dict) -> None:
        """Write the checkpoint of ``step``, then ``last_checkpoint``, then
        rotate old checkpoints out."""
        if not self._atomic:
            super()._save_checkpoint_with_step(runner, step, meta)
            return
        hub = runner.message_hub
        filename = self.filename_tmpl.format(step)
        path = self.file_backend.join_path(self.out_dir, filename)
        saved = dict(
            last_ckpt=self.last_ckpt,
            keep_ckpt_ids=(list(self.keep_ckpt_ids)
                           if self.max_keep_ckpts > 0 else None),
            hub={
                key: hub.runtime_info[key]
                for key in ('last_ckpt', 'keep_ckpt_ids')
                if key in hub.runtime_info
            })

        # Bookkeeping first: the checkpoint records itself as kept and as
        # the last one (what CheckpointHook stores in the message hub).
        evicted: List[int] = []
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and
                                            self.keep_ckpt_ids[-1] == step):
            ids = list(self.keep_ckpt_ids) + [step]
            evicted = ids[:-self.max_keep_ckpts]
            self.keep_ckpt_ids = deque(ids[-self.max_keep_ckpts:],
                                       self.max_keep_ckpts)
            hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))
        self.last_ckpt = path
        hub.update_info('last_ckpt', path)

        try:
            runner.save_checkpoint(
                self.out_dir,
                filename,
                save_optimizer=self.save_optimizer,
                save_param_scheduler=self.save_param_scheduler,
                meta=meta,
                by_epoch=self.by_epoch,
                backend_args=self.backend_args,
                **self.args)
        except OSError as exc:
            self._restore(runner, saved)
            raise self._write_error(runner, path, exc) from exc
        if not is_main_process():
            return

        last_file = osp.join(runner.work_dir, 'last_checkpoint')
        try:
            atomic_write_bytes(last_file, str(path).encode('utf-8'))
        except OSError as exc:
            raise self._write_error(runner, last_file, exc) from exc

        for old in evicted:
            self._remove(
                self.file_backend.join_path(self.out_dir,
                                            self.filename_tmpl.format(old)))

    def _save_best_checkpoint(self, runner, metrics: Dict) -> None:
        """``CheckpointHook``'s best-checkpoint logic, with the previous
        best (and rotated) checkpoints deleted only after the new files are
        complete."""
        if not self._atomic:
            super()._save_best_checkpoint(runner, metrics)
            return
        backend = self.file_backend
        pending: List[str] = []
        self.file_backend = _DeferredRemoval(backend, pending)
        try:
            super()._save_best_checkpoint(runner, metrics)
        except CheckpointWriteError:
            raise
        except OSError as exc:  # writing the new best checkpoint failed
            raise self._write_error(runner, None, exc) from exc
        finally:
            self.file_backend = backend
        if not is_main_process():
            return
        keep = {str(self.last_ckpt)}
        keep.update(
            str(p) for p in ([getattr(self, 'best_ckpt_path', None)] + list(
                getattr(self, 'best_ckpt_path_dict', {}).values()))
            if p)
        for path in pending:
            if path not in keep:
                self._remove(path)

    # -------------------------------------------------------------- helpers
    def _remove(self, path: str) -> None:
        if self.file_backend.isfile(path):
            self.file_backend.remove(path)
        elif self.file_backend.isdir(path):
            self.file_backend.rmtree(path)

    def _restore(self, runner, saved: Dict) -> None:
        """Undo the bookkeeping of a save that failed."""
        self.last_ckpt = saved['last_ckpt']
        if saved['keep_ckpt_ids'] is not None:
            self.keep_ckpt_ids = deque(saved['keep_ckpt_ids'],
                                       self.max_keep_ckpts)
        info = runner.message_hub.runtime_info
        for key in ('last_ckpt', 'keep_ckpt_ids'):
            if key in saved['hub']:
                runner.message_hub.update_info(key, saved['hub'][key])
            else:
                info.pop(key, None)

    def _write_error(self, runner, path: Optional[str],
                     exc: OSError) -> CheckpointWriteError:
        """The error to raise for a failed write of ``path`` (None: the
        path is in ``exc``)."""
        last_file = osp.join(runner.work_dir, 'last_checkpoint')
        previous = None
        if osp.isfile(last_file):
            with open(last_file, encoding='utf-8') as f:
                previous = f.read().strip() or None
        if previous:
            state = (f'The latest complete checkpoint is still {previous!r} '
                     f'(named in {last_file!r}).')
        else:
            state = 'No complete checkpoint had been saved yet.'
        if exc.errno in _NO_SPACE:
            hint = ('Free disk space, lower default_hooks.checkpoint.'
                    'max_keep_ckpts or point default_hooks.checkpoint.'
                    'out_dir at a disk with room')
        else:
            folder = osp.dirname(osp.abspath(path)) if path else \
                str(self.out_dir)
            hint = (f'Fix the cause (permissions, file system) in '
                    f'{folder!r}')
        reason = str(exc.strerror or exc)
        if path and path not in reason:
            reason = f'{reason} ({path!r})'
        return CheckpointWriteError(
            exc.errno, f'saving a checkpoint failed: {reason}. {state} '
            f'{hint}, then continue with `tools/train.py CONFIG --resume`.')
