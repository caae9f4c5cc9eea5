"""Choose the checkpoint ``--resume`` continues from, and check it first.

MMEngine 0.10 resumes from the file named in ``<work_dir>/last_checkpoint``
(or given as ``--resume PATH``) without looking at it: a truncated or
corrupt file ends in a 40-line traceback of the zip reader, an empty
``last_checkpoint`` or one naming a deleted file in a traceback that says
neither where the path came from nor that an older checkpoint is there.

:func:`resolve_resume_checkpoint` is called by ``tools/train.py`` before
the runner is built. It checks the file's integrity without unpickling it
(a checkpoint written by :func:`torch.save` is a zip archive whose members
carry CRC-32 checksums: a truncated file has no central directory, a
corrupt one fails a checksum), and on a problem it names the file, where
its path came from, and the newest good checkpoint in the same folder.
With ``fallback=True`` (``--resume-fallback``) it logs the problem and
resumes from that checkpoint instead.

The search for that checkpoint unpickles nothing: a candidate counts as
good only if it is in torch's zip format, passes its checksums and its
pickle names no type outside the package's allowlist
(:func:`~auglocal_det.engine.runner.checkpoint.disallowed_globals` reads
the instructions without running them). A file in torch's legacy format
cannot be checked that way and is never proposed.
"""
import glob
import logging
import os.path as osp
import zipfile
from typing import List, Optional

from mmengine.logging import print_log

from auglocal_det.errors import InputError, InputFileNotFoundError

from .checkpoint import (
    TRUST_OPTION,
    UnsafeCheckpointError,
    disallowed_globals,
    load_local_checkpoint,
)

__all__ = [
    'checkpoint_problem', 'named_resume_checkpoint',
    'previous_good_checkpoint', 'resolve_resume_checkpoint'
]

_PATTERNS = ('epoch_*.pth', 'iter_*.pth')


def checkpoint_problem(path: str,
                       trust: bool = False,
                       scan: bool = False) -> Optional[str]:
    """What is wrong with the checkpoint file ``path``, if anything.

    Reads the whole file once (the zip members' CRC-32 checksums) and the
    instructions of its pickle, but runs none of them. A file in torch's
    legacy (non-zip) format is loaded on the CPU by the safe loader (in
    full with ``trust``), or, with ``scan``, reported as uncheckable.

    Args:
        path (str): The checkpoint file.
        trust (bool): The user vouched for the file
            (``--trust-checkpoint``): types outside the allowlist are no
            problem. Defaults to False.
        scan (bool): The file is a candidate the user did not name:
            unpickle nothing at all. Defaults to False.

    Returns:
        str | None: None for a readable file, otherwise the reason
        (missing, empty, truncated, a failed checksum, a type outside the
        allowlist, ...).
    """
    if not osp.exists(path):
        return 'the file does not exist'
    if not osp.isfile(path):
        return 'it is not a file'
    size = osp.getsize(path)
    if size == 0:
        return 'the file is empty (0 bytes)'
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
                if not any(n.endswith('/data.pkl') or n == 'data.pkl'
                           for n in names):
                    return ('it is a zip archive but not a torch checkpoint '
                            '(no data.pkl)')
                bad = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            return f'it cannot be read ({type(exc).__name__}: {exc})'
        if bad is not None:
            return (f'it is corrupt: the checksum of its member {bad!r} '
                    'does not match')
        if trust:
            return None
        try:
            types = disallowed_globals(path)
        except (ValueError, OSError) as exc:
            return str(exc)
        if types:
            return _unsafe(', '.join(repr(t) for t in types))
        return None
    with open(path, 'rb') as f:
        if f.read(4) == b'PK\x03\x04':  # a zip archive without its end
            return (f'it is truncated ({size} bytes): the zip archive '
                    'torch.save writes has no central directory')
    if scan:
        return ("it is in torch's legacy format, which cannot be checked "
                'without unpickling it')
    try:
        load_local_checkpoint(path, map_location='cpu', trust=trust)
    except UnsafeCheckpointError as exc:
        return _unsafe(exc.needs)
    except InputError as exc:  # truncated, corrupt or not a checkpoint
        return f'it is truncated or corrupt ({size} bytes; {exc})'
    return None


def _unsafe(needs: str) -> str:
    return (f'unpickling it needs {needs}, which no checkpoint of this '
            'package holds (unpickling runs the code a file names; add '
            f'{TRUST_OPTION} if you trust the file)')


def _candidates(folder: str, exclude: str) -> List[str]:
    """Checkpoints of ``folder`` other than ``exclude``, newest first."""
    paths = set()
    for pattern in _PATTERNS:
        paths.update(glob.glob(osp.join(folder, pattern)))
    paths.discard(exclude)
    return sorted(
        (p for p in paths if osp.isfile(p)),
        key=lambda p: (osp.getmtime(p), p),
        reverse=True)


def previous_good_checkpoint(folder: str,
                             exclude: str = '') -> Optional[str]:
    """The newest checkpoint of ``folder`` (by modification time) that
    passes :func:`checkpoint_problem` as a candidate (nothing is
    unpickled), other than ``exclude``.

    Args:
        folder (str): The checkpoint folder (usually the work dir).
        exclude (str): A path to leave out (the bad checkpoint).

    Returns:
        str | None: Its path, or None if there is none.
    """
    exclude = osp.abspath(exclude) if exclude else ''
    for path in _candidates(osp.abspath(folder), exclude):
        if checkpoint_problem(path, scan=True) is None:
            return path
    return None


def _read_last_checkpoint(last_file: str) -> str:
    with open(last_file, encoding='utf-8') as f:
        return f.read().strip()


def named_resume_checkpoint(work_dir: str, resume: str) -> Optional[str]:
    """The checkpoint the user named for ``--resume``.

    Args:
        work_dir (str): The run's work dir.
        resume (str): ``'auto'`` or a path, as for
            :func:`resolve_resume_checkpoint`.

    Returns:
        str | None: ``resume`` itself, or for ``'auto'`` the file named in
        ``<work_dir>/last_checkpoint`` (None if there is none).
    """
    if resume != 'auto':
        return resume
    last_file = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(last_file):
        return None
    return _read_last_checkpoint(last_file) or None


def resolve_resume_checkpoint(work_dir: str,
                              resume: str,
                              fallback: bool = False,
                              trust: bool = False) -> Optional[str]:
    """The checkpoint a ``--resume`` run should load, checked.

    Args:
        work_dir (str): The run's work dir.
        resume (str): ``'auto'`` (``--resume`` without a value: the file
            named in ``<work_dir>/last_checkpoint``) or a path.
        fallback (bool): On a problem, resume from the newest good
            checkpoint of the folder instead of stopping (the problem is
            logged). Defaults to False.
        trust (bool): The user vouched for the named checkpoint
            (``--trust-checkpoint``): it may need types outside the
            allowlist. Never extends to the checkpoint a fallback picks.
            Defaults to False.

    Returns:
        str | None: The path to resume from, or None to keep MMEngine's
        own automatic choice (``'auto'`` with a good ``last_checkpoint``,
        or no ``last_checkpoint`` at all: a fresh start).

    Raises:
        InputError: If the checkpoint is unusable and ``fallback`` is
            False (or there is nothing to fall back to). The message names
            the file, where its path came from and the previous good
            checkpoint.
        InputFileNotFoundError: If an explicit ``--resume PATH`` does not
            exist and there is nothing to fall back to.
    """
    last_file = osp.join(work_dir, 'last_checkpoint')
    if resume == 'auto':
        if not osp.isfile(last_file):
            return None  # MMEngine starts afresh and says so
        path = _read_last_checkpoint(last_file)
        origin = f'named in {last_file!r}'
        if not path:
            problem = (f'{last_file!r} is empty (it should name the latest '
                       'checkpoint of the run)')
            path = ''
        else:
            reason = checkpoint_problem(path, trust=trust)
            if reason is None:
                return None
            problem = f'the checkpoint {path!r} ({origin}) is unusable: ' \
                      f'{reason}'
        folder = osp.dirname(path) if path and osp.isdir(
            osp.dirname(path) or '.') else work_dir
    else:
        path = resume
        reason = checkpoint_problem(path, trust=trust)
        if reason is None:
            return path
        problem = f'the checkpoint {path!r} given to --resume is ' \
                  f'unusable: {reason}'
        folder = osp.dirname(path) or '.'
        if not osp.isdir(folder):
            folder = work_dir

    good = previous_good_checkpoint(folder, exclude=path)
    if good is None and osp.abspath(folder) != osp.abspath(work_dir):
        good = previous_good_checkpoint(work_dir, exclude=path)
    if good is not None and fallback:
        print_log(
            f'--resume: {problem}. Resuming from {good!r} instead, the '
            'newest good checkpoint in the folder (--resume-fallback)',
            logger='current',
            level=logging.WARNING)
        return good
    if good is not None:
        advice = (f'The previous good checkpoint is {good!r}: resume from '
                  f'it with --resume {good} (or add --resume-fallback to '
                  'do so automatically)')
    else:
        advice = (f'There is no other good checkpoint in {folder!r}; '
                  'restore the file, or start afresh without --resume '
                  '(with --overwrite to replace the old run)')
    error = InputFileNotFoundError if (
        resume != 'auto' and not osp.exists(path)) else InputError
    raise error(f'--resume: {problem}. {advice}')
