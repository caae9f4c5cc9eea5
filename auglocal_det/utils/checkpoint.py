"""Loading full MMEngine checkpoints under torch >= 2.6.

torch 2.6 changed the default of ``torch.load`` to ``weights_only=True``.
MMEngine 0.10.x calls ``torch.load`` without the argument, and a full
training checkpoint holds more than tensors (the message hub's numpy
scalars, ``meta`` with the config text and the dataset meta), so ``--resume``
and ``load_from`` fail with an ``UnpicklingError``.

:func:`register_trusted_local_loader` replaces MMEngine's loader for plain
local paths (the ``''`` scheme) with one that passes
``weights_only=False``. Security note: unpickling runs code stored in the
file, so this applies only to files on the local file system that the user
names in a config or on the command line (``load_from``, ``--resume``,
``init_cfg``); remote schemes (``http://``, ``s3://``, ...) keep MMEngine's
loaders and torch's safe default.
"""
import os.path as osp
from typing import Any, Optional

import torch
from mmengine.runner.checkpoint import CheckpointLoader

__all__ = ['load_local_checkpoint', 'register_trusted_local_loader']


def load_local_checkpoint(filename: str,
                          map_location: Optional[Any] = None) -> Any:
    """Load a checkpoint from a local file the user pointed at.

    Args:
        filename (str): Path of the checkpoint; ``~`` is expanded.
        map_location: Same as in :func:`torch.load`. Defaults to None.

    Returns:
        The unpickled object (usually a dict).

    Raises:
        FileNotFoundError: If ``filename`` is not an existing file.
        RuntimeError: If the file exists but cannot be unpickled; the message
            names the file.
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint file {filename!r} not found')
    try:
        # Trusted: a local file named by the user (see the module docstring).
        return torch.load(
            filename, map_location=map_location, weights_only=False)
    except Exception as exc:  # corrupt, truncated or not a checkpoint
        raise RuntimeError(
            f'cannot read checkpoint {filename!r}: {type(exc).__name__}: '
            f'{exc}') from exc


def register_trusted_local_loader() -> None:
    """Make MMEngine load local checkpoint files with ``weights_only=False``.

    Idempotent. Affects every MMEngine code path that resolves a local path
    through :class:`mmengine.runner.CheckpointLoader`: ``Runner.resume``,
    ``Runner.load_checkpoint`` (``load_from``), ``load_checkpoint`` and the
    ``Pretrained`` initializer.
    """
    CheckpointLoader.register_scheme(
        prefixes='', loader=load_local_checkpoint, force=True)
