"""The allowlist of a checkpoint's types, read without unpickling.

A full MMEngine checkpoint of this package holds, besides tensors, numpy
values and the message hub's ``HistoryBuffer``. :func:`checkpoint_safe_globals`
lists exactly those types for torch's weights-only unpickler, and
:func:`disallowed_globals` names what a file needs beyond them without
running anything. Both ``models/`` (the pretrained-file check) and
``engine/`` (the checkpoint loader) read them, so they sit here, on torch,
numpy and mmengine only.
"""
import pickle
import zipfile
from contextlib import contextmanager
from typing import Any, Callable, Iterator, List

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

__all__ = ['allowlisted', 'checkpoint_safe_globals', 'disallowed_globals']


def _history_buffer_statistic(buffer: Any, name: str) -> Callable:
    """``getattr`` restricted to the statistics methods of a buffer.

    ``HistoryBuffer`` pickles its statistics methods (``min``, ``max``,
    ``current``, ``mean`` and registered ones) as ``getattr(HistoryBuffer,
    name)``; any other ``getattr`` in a file is refused.
    """
    owner = buffer if isinstance(buffer, type) else type(buffer)
    if issubclass(owner, HistoryBuffer) and isinstance(
            name, str) and name in _statistics_names():
        return getattr(buffer, name)
    raise pickle.UnpicklingError(
        f'getattr({owner.__name__}, {name!r}) is not allowed: only the '
        'statistics methods of a HistoryBuffer are')


def _statistics_names() -> set:
    names = {'min', 'max', 'current', 'mean'}
    names.update(HistoryBuffer._statistics_methods)
    return names


def checkpoint_safe_globals() -> List[Any]:
    """The types a full checkpoint of this package holds besides what
    torch's weights-only unpickler allows by default.

    Returns:
        list: Entries for :func:`torch.serialization.safe_globals`: numpy
        arrays, dtypes and scalars (under numpy 2's ``numpy._core`` and
        numpy 1's ``numpy.core`` names), MMEngine's ``HistoryBuffer`` and
        ``getattr`` limited to its statistics methods.
    """
    multiarray = np._core.multiarray if hasattr(np, '_core') \
        else np.core.multiarray
    entries: List[Any] = [np.ndarray, np.dtype, HistoryBuffer,
                          (_history_buffer_statistic, 'builtins.getattr')]
    for name in ('scalar', '_reconstruct'):
        function = getattr(multiarray, name)
        for module in ('numpy._core.multiarray', 'numpy.core.multiarray'):
            entries.append((function, f'{module}.{name}'))
    for kind in (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8,
                 np.uint16, np.uint32, np.uint64, np.float16, np.float32,
                 np.float64):
        entries.append(type(np.dtype(kind)))
    return entries


@contextmanager
def allowlisted() -> Iterator[None]:
    """Allow the package's checkpoint types while the context is open.

    Entries the process had allowed already stay allowed afterwards.
    """
    present = set(torch.serialization.get_safe_globals())
    added = [g for g in checkpoint_safe_globals() if g not in present]
    with torch.serialization.safe_globals(added):
        yield


def disallowed_globals(path: str) -> List[str]:
    """Types the pickle of a checkpoint names beyond the allowlist.

    Reads the pickle's instructions without unpickling anything.

    Args:
        path (str): A checkpoint in torch's zip format.

    Returns:
        list[str]: The ``module.name`` of each type or function the file
        needs that neither torch nor :func:`checkpoint_safe_globals`
        allows, sorted.

    Raises:
        ValueError: If the file is not in torch's zip format, or its pickle
            uses instructions a checkpoint written by :func:`torch.save`
            does not (``pickle.UnpicklingError``, a ``ValueError``).
    """
    with allowlisted():
        try:
            found = torch.serialization.get_unsafe_globals_in_checkpoint(
                path)
        except (pickle.UnpicklingError, EOFError, RuntimeError,
                zipfile.BadZipFile) as exc:
            raise ValueError(
                f'its pickle cannot be read without running it '
                f'({type(exc).__name__}: {exc})') from exc
    return sorted(found)
