"""Loading full MMEngine checkpoints under torch >= 2.6.

torch 2.6 changed the default of ``torch.load`` to ``weights_only=True``.
MMEngine 0.10.x calls ``torch.load`` without the argument, and a full
training checkpoint holds more than tensors (the message hub's numpy
scalars, ``meta`` with the config text and the dataset meta), so ``--resume``
and ``load_from`` fail with an ``UnpicklingError``.

Unpickling runs code stored in the file, so the package reads with
``weights_only=False`` only the checkpoints it has reason to trust: the
local files the user names for ``--resume`` and ``load_from`` (inside
:func:`trusted_local_checkpoints`, which :class:`LocalRunner` enters around
``load_or_resume`` only) and the training checkpoint given to the exporter
(:func:`load_local_checkpoint`). Every other load in the process, such as a
``Pretrained`` backbone file or a remote scheme (``http://``, ``s3://``,
...), keeps torch's safe default.
"""
import os.path as osp
from contextlib import contextmanager
from typing import Any, Iterator, Optional

import torch
from mmengine.runner.checkpoint import CheckpointLoader

from auglocal_det.errors import InputFileNotFoundError, UnreadableFileError

__all__ = ['load_local_checkpoint', 'trusted_local_checkpoints']


def load_local_checkpoint(filename: str,
                          map_location: Optional[Any] = None) -> Any:
    """Load a checkpoint from a local file the user pointed at.

    Args:
        filename (str): Path of the checkpoint; ``~`` is expanded.
        map_location: Same as in :func:`torch.load`. Defaults to None.

    Returns:
        The unpickled object (usually a dict).

    Raises:
        InputFileNotFoundError: If ``filename`` is not an existing file.
        UnreadableFileError: If the file exists but cannot be unpickled; the
            message names the file.
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise InputFileNotFoundError(
            f'checkpoint file {filename!r} not found')
    try:
        # Trusted: a local file named by the user (see the module docstring).
        return torch.load(
            filename, map_location=map_location, weights_only=False)
    except Exception as exc:  # corrupt, truncated or not a checkpoint
        raise UnreadableFileError(
            f'cannot read checkpoint {filename!r}: {type(exc).__name__}: '
            f'{exc}') from exc


@contextmanager
def trusted_local_checkpoints() -> Iterator[None]:
    """Make MMEngine read local checkpoint files with ``weights_only=False``
    inside the context.

    Affects every MMEngine code path that resolves a plain local path
    through :class:`mmengine.runner.CheckpointLoader` while the context is
    open (``Runner.resume`` and ``Runner.load_checkpoint``); remote schemes
    keep their loaders. MMEngine's own loader is back in place afterwards.
    """
    schemes = CheckpointLoader._schemes
    previous = schemes.get('')
    CheckpointLoader.register_scheme(
        prefixes='', loader=load_local_checkpoint, force=True)
    try:
        yield
    finally:
        if previous is None:
            schemes.pop('', None)
        else:
            CheckpointLoader.register_scheme(
                prefixes='', loader=previous, force=True)
