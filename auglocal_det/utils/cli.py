"""Helpers shared by the command-line tools in ``tools/``."""
import os
import sys
from typing import Callable

from auglocal_det.engine.hooks.atomic_checkpoint_hook import (
    CheckpointWriteError,
)

__all__ = ['run_with_clean_errors']

#: Errors caused by the user's input (a missing file, a wrong option or a
#: malformed dataset), a training run that diverged (FloatingPointError) or
#: a checkpoint that could not be written (a full disk). They are reported
#: as one message without a traceback; everything else propagates with its
#: traceback.
USER_ERRORS = (FileNotFoundError, NotADirectoryError, ValueError,
               FloatingPointError, CheckpointWriteError)


def run_with_clean_errors(main: Callable[[], None]) -> None:
    """Run ``main`` and turn input errors into a one-line message.

    The message names the file, key or option at fault (the raising code is
    responsible for that). Set ``AUGLOCAL_DEBUG=1`` to see the full
    traceback instead.

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
