"""Atomic file writes and hashing for the hooks' outputs."""
import hashlib
import json
import os
import os.path as osp
import tempfile
from typing import IO, Any, Callable

import torch

__all__ = ['atomic_write', 'save_torch_atomic', 'save_json_atomic',
           'sha256_file']


def atomic_write(path: str, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` through a temporary file in the same folder.

    The temporary file is flushed, synced and then renamed over ``path``
    with :func:`os.replace`, so a reader never sees a half-written file
    and an interrupted write leaves the previous file intact.

    Args:
        path (str): Destination file; its folder is created if needed.
        write (Callable): Called with the open binary temporary file.
    """
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        dir=folder, prefix=f'.{osp.basename(path)}.', suffix='.tmp')
    try:
        with os.fdopen(fd, 'wb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600 files; give the usual umask permissions
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_torch_atomic(obj: Any, path: str) -> None:
    """:func:`torch.save` ``obj`` to ``path`` atomically."""
    atomic_write(path, lambda f: torch.save(obj, f))


def save_json_atomic(obj: Any, path: str) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    text = json.dumps(obj, indent=2, sort_keys=False) + '\n'
    atomic_write(path, lambda f: f.write(text.encode('utf-8')))


def sha256_file(path: str, chunk_size: int = 1 << 22) -> str:
    """Hex SHA-256 of a file, read in chunks.

    Args:
        path (str): The file.
        chunk_size (int): Bytes per read. Defaults to 4 MiB.

    Returns:
        str: 64 hex digits.
    """
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(chunk_size), b''):
            digest.update(chunk)
    return digest.hexdigest()
