"""The process's resident memory on Linux, and glibc's mmap threshold.

The one reader of ``/proc/self/status`` and the one way to set the mmap
threshold, shared by ``TrainingMemoryHook`` and the benchmarks.

The resident set follows the live tensors only if ``malloc`` hands freed
blocks back to the system. glibc does so for a block it mapped on its own,
which it does for every block at or above its mmap threshold. A process
measured this way therefore sets that threshold low: before it starts,
through :data:`RSS_ENV`, or while it runs, through
:func:`set_mmap_threshold`.
"""
import ctypes
import platform
from typing import Dict, Sequence

__all__ = [
    'MMAP_THRESHOLD_ENV', 'RSS_ENV', 'RSS_MMAP_THRESHOLD', 'peak_rss_bytes',
    'read_proc_status', 'reset_peak_rss', 'rss_bytes', 'set_mmap_threshold'
]

#: The environment variable of glibc's mmap threshold.
MMAP_THRESHOLD_ENV = 'MALLOC_MMAP_THRESHOLD_'
#: The mmap threshold of a measured process (bytes): every block of 64 KiB
#: or more is mapped alone and unmapped when freed.
RSS_MMAP_THRESHOLD = 65536
#: Environment of a process whose resident set follows its live tensors.
RSS_ENV = {MMAP_THRESHOLD_ENV: str(RSS_MMAP_THRESHOLD)}
#: mallopt's parameter number of the mmap threshold (glibc's malloc.h).
_M_MMAP_THRESHOLD = -3
_STATUS = '/proc/self/status'


def read_proc_status(keys: Sequence[str] = ('VmRSS', 'VmHWM'),
                     path: str = _STATUS) -> Dict[str, int]:
    """Memory fields of ``/proc/self/status`` in bytes.

    Args:
        keys (Sequence[str]): Field names. Defaults to VmRSS and VmHWM.
        path (str): The status file. Defaults to this process's.

    Returns:
        dict: Field name -> bytes, for the fields present.
    """
    values = {}
    with open(path) as f:
        for line in f:
            name, _, rest = line.partition(':')
            if name in keys:
                values[name] = int(rest.split()[0]) * 1024  # kB
    return values


def _status_bytes(field_name: str) -> int:
    value = read_proc_status((field_name, )).get(field_name)
    if value is None:
        raise OSError(f'{field_name} not found in {_STATUS}')
    return value


def reset_peak_rss() -> None:
    """Reset the peak resident set (``VmHWM``) to the current one.

    Linux does it on ``echo 5 > /proc/self/clear_refs``.

    Raises:
        OSError: Where ``/proc/self/clear_refs`` cannot be written (not
            Linux).
    """
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')


def peak_rss_bytes() -> int:
    """int: Peak resident set (``VmHWM``) in bytes, since the start or the
    last :func:`reset_peak_rss`."""
    return _status_bytes('VmHWM')


def rss_bytes() -> int:
    """int: Current resident set (``VmRSS``) in bytes."""
    return _status_bytes('VmRSS')


def set_mmap_threshold(num_bytes: int) -> bool:
    """Set glibc's mmap threshold of this process.

    Args:
        num_bytes (int): The new threshold.

    Returns:
        bool: Whether it was set (False where there is no glibc).
    """
    if platform.libc_ver()[0] != 'glibc':
        return False
    try:
        return bool(ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, num_bytes))
    except (OSError, AttributeError):
        return False
