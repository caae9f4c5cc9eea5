"""Helpers shared by the command-line tools in ``tools/``."""
import os
import os.path as osp
import sys
from typing import Callable

from mmengine.config import Config

from auglocal_det.engine.hooks.atomic_checkpoint_hook import (
    CheckpointWriteError,
)
from auglocal_det.errors import (
    InputError,
    InputFileNotFoundError,
    TrainingDivergedError,
)

__all__ = ['USER_ERRORS', 'load_config', 'run_with_clean_errors']

#: What the tools report as one message without a traceback: the package's
#: own input errors (raised where the input is checked, naming the file,
#: key or option at fault), a training run that diverged, and a checkpoint
#: that could not be written (a full disk). Every other exception is a
#: program bug and propagates with its traceback.
USER_ERRORS = (InputError, TrainingDivergedError, CheckpointWriteError)


def load_config(path: str) -> Config:
    """Read a config file given on the command line.

    Args:
        path (str): The config file.

    Returns:
        Config: The config.

    Raises:
        InputFileNotFoundError: If ``path`` is not a file.
    """
    if not osp.isfile(path):
        raise InputFileNotFoundError(f'config file {path!r} not found')
    return Config.fromfile(path)


def run_with_clean_errors(main: Callable[[], None]) -> None:
    """Run ``main`` and turn the user's input errors into a one-line
    message (exit status 1).

    The message names the file, key or option at fault (the raising code is
    responsible for that). Set ``AUGLOCAL_DEBUG=1`` to see the full
    traceback of an input error too.

    Args:
        main (Callable[[], None]): The tool's entry point.
    """
    if os.environ.get('AUGLOCAL_DEBUG', '0') == '1':
        main()
        return
    try:
        main()
    except USER_ERRORS as exc:
        print(f'error: {exc}', file=sys.stderr)
        print('(set AUGLOCAL_DEBUG=1 to see the traceback)', file=sys.stderr)
        sys.exit(1)
