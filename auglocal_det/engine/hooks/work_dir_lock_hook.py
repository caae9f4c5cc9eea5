"""One training job per work dir, and no silent overwrite of another run.

Two jobs started with the same ``--work-dir`` (a resubmitted job while the
first still runs, two users sharing a folder) write the same
``epoch_N.pth``, ``last_checkpoint`` and export, each overwriting the
other's, and neither says a word. A new run without ``--resume`` in a work
dir that already holds a finished or interrupted run does the same to the
older run's checkpoints.

:class:`WorkDirLockHook` stops both before anything is written:

- **Lock.** The main process takes an exclusive :func:`fcntl.flock` on
  ``<work_dir>/.work_dir.lock`` and writes its host, pid, start time and
  command line into it. The kernel releases the lock when the process
  ends, however it ends (a SIGKILLed job leaves no stale lock), so a later
  ``--resume`` is never refused. A second job finds the lock taken and
  stops at once, naming the job that holds it.
- **Earlier run.** Without ``--resume`` (``resume=False``), a work dir
  whose checkpoint folder already holds checkpoints or a
  ``last_checkpoint`` file is refused, unless ``overwrite=True``
  (``tools/train.py --overwrite``), which removes them first.

Under data parallelism only the main process takes the lock and looks at
the folder; its verdict is broadcast so that every process stops alike.
"""
import datetime
import errno
import glob
import json
import os
import os.path as osp
import socket
import sys
from typing import List, Optional

from mmengine.dist import broadcast_object_list, get_dist_info, is_main_process
from mmengine.hooks import CheckpointHook, Hook

from auglocal_det.errors import InputError
from auglocal_det.registry import HOOKS

__all__ = ['WorkDirLockHook', 'WorkDirLock', 'run_checkpoints']

#: Name of the lock file in the work dir.
LOCK_NAME = '.work_dir.lock'
#: Names of the files a training run writes into its checkpoint folder.
_CHECKPOINT_PATTERNS = ('epoch_*.pth', 'iter_*.pth', 'best_*.pth')

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None


class WorkDirLock:
    """An exclusive, advisory lock on a work dir held by this process.

    Args:
        work_dir (str): The folder to lock (it must exist).
    """

    def __init__(self, work_dir: str) -> None:
        self.work_dir = work_dir
        self.path = osp.join(work_dir, LOCK_NAME)
        self._fd: Optional[int] = None

    def acquire(self) -> bool:
        """Take the lock.

        Returns:
            bool: True if taken, False if the file system does not support
            locks (the caller warns; nothing is protected then).

        Raises:
            InputError: If another process holds the lock; the message
                names its host, pid, start time and command.
        """
        if fcntl is None:
            return False
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise InputError(self._busy_message()) from None
            return False  # ENOLCK, EOPNOTSUPP, ...: no locks on this mount
        owner = dict(
            host=socket.gethostname(),
            pid=os.getpid(),
            started=datetime.datetime.now(
                datetime.timezone.utc).strftime('%Y-%m-%d %H:%M:%S UTC'),
            command=' '.join(sys.argv))
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(owner) + '\n').encode('utf-8'))
        os.fsync(fd)
        self._fd = fd
        return True

    def release(self) -> None:
        """Give the lock back (the process's end does it too)."""
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def _busy_message(self) -> str:
        try:
            with open(self.path, encoding='utf-8') as f:
                owner = json.loads(f.read() or '{}')
        except (OSError, ValueError):
            owner = {}
        who = (f"host {owner.get('host', '?')}, pid {owner.get('pid', '?')}, "
               f"started {owner.get('started', '?')}")
        if owner.get('command'):
            who += f", command: {owner['command']}"
        return (f'work dir {self.work_dir!r} is in use by another training '
                f'job ({who}); two jobs in one work dir overwrite each '
                "other's checkpoints. Wait for that job to end (or stop it), "
                'or give this one another --work-dir (the lock is '
                f'{self.path!r}, held until that process exits)')


def run_checkpoints(folders: List[str]) -> List[str]:
    """Checkpoints and ``last_checkpoint`` files of a run in ``folders``.

    Args:
        folders (list[str]): The work dir and the checkpoint folder.

    Returns:
        list[str]: The paths found, sorted.
    """
    found = set()
    for folder in folders:
        for pattern in _CHECKPOINT_PATTERNS + ('last_checkpoint', ):
            found.update(glob.glob(osp.join(folder, pattern)))
    return sorted(found)


@HOOKS.register_module()
class WorkDirLockHook(Hook):
    """Lock the work dir for this job; refuse to overwrite an earlier run.

    See the module docstring. Runs in ``before_train``, before any
    checkpoint is written (``Runner.val``/``test`` never lock: testing
    a work dir while it trains is fine), and holds the lock until
    ``after_run``, past the export of ``after_train``.

    Args:
        overwrite (bool): Let a new run (no ``--resume``) start in a work
            dir that holds an earlier run's checkpoints, removing them and
            its ``last_checkpoint`` first. ``tools/train.py --overwrite``
            sets it. Defaults to False.

    Examples:
        >>> default_hooks = dict(work_dir_lock=dict(type='WorkDirLockHook'))
    """

    priority = 'VERY_HIGH'

    def __init__(self, overwrite: bool = False) -> None:
        self.overwrite = bool(overwrite)
        self._lock: Optional[WorkDirLock] = None

    def before_train(self, runner) -> None:
        """Take the lock and look for an earlier run (main process); every
        process raises the same error if either fails."""
        error = None
        if is_main_process():
            try:
                self._take(runner)
            except InputError as exc:
                error = str(exc)
        if get_dist_info()[1] > 1:
            verdict = [error]
            broadcast_object_list(verdict)
            error = verdict[0]
        if error is not None:
            raise InputError(error)

    def after_run(self, runner) -> None:
        """Release the lock."""
        self._release()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _take(self, runner) -> None:
        lock = WorkDirLock(runner.work_dir)
        if not lock.acquire():
            runner.logger.warning(
                f'WorkDirLockHook: the file system of {runner.work_dir!r} '
                'does not support file locks; a second job in the same work '
                'dir would not be detected')
        else:
            self._lock = lock
        if getattr(runner, '_resume', False):
            return
        found = run_checkpoints(self._folders(runner))
        if not found:
            return
        if not self.overwrite:
            self._release()
            raise InputError(self._earlier_run_message(runner, found))
        for path in found:
            os.remove(path)
        runner.logger.warning(
            f'--overwrite: removed the {len(found)} checkpoint file(s) of '
            f'the earlier run in {runner.work_dir!r}: ' +
            ', '.join(osp.basename(p) for p in found))

    @staticmethod
    def _folders(runner) -> List[str]:
        folders = [runner.work_dir]
        for hook in runner.hooks:
            if isinstance(hook, CheckpointHook) and hook.out_dir and \
                    '://' not in str(hook.out_dir):
                # CheckpointHook puts the run under <out_dir>/<work dir name>
                folders.append(
                    osp.join(str(hook.out_dir),
                             osp.basename(osp.normpath(runner.work_dir))))
        return folders

    @staticmethod
    def _earlier_run_message(runner, found: List[str]) -> str:
        names = [osp.basename(p) for p in found]
        shown = ', '.join(names[:6]) + (
            f', ... ({len(names) - 6} more)' if len(names) > 6 else '')
        last = osp.join(runner.work_dir, 'last_checkpoint')
        named = ''
        if osp.isfile(last):
            with open(last, encoding='utf-8') as f:
                target = f.read().strip()
            if target:
                named = f'; last_checkpoint names {target!r}'
        return (f'work dir {runner.work_dir!r} already holds the checkpoints '
                f'of an earlier run ({shown}{named}), which a new run would '
                'overwrite. Continue that run with --resume, give this one '
                'another --work-dir, or pass --overwrite to remove them and '
                'start afresh')
