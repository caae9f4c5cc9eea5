"""Exception types for errors caused by the user's input.

The command-line tools print these as one line naming the file, key or
option at fault (see :func:`auglocal_det.utils.cli.run_with_clean_errors`);
any other exception is a program bug and keeps its traceback. The classes
derive from the built-in exception a caller would otherwise catch, so
``except ValueError`` keeps working.
"""

__all__ = [
    'InputError', 'InputFileNotFoundError', 'InputTypeError',
    'UnreadableFileError', 'TrainingDivergedError', 'CheckpointWriteError',
    'PipelineStoppedError'
]


class InputError(ValueError):
    """A config, option, file or data set the package cannot accept.

    The message must name what is at fault (the config key, the option or
    the file) and, where there is one, the way to fix it.
    """


class InputFileNotFoundError(InputError, FileNotFoundError):
    """A file or directory named by the user's input does not exist."""


class InputTypeError(InputError, TypeError):
    """A config names a component of the wrong kind (e.g. an optimizer
    wrapper that cannot train local modules)."""


class UnreadableFileError(InputError, RuntimeError):
    """A file the user named exists but cannot be read (corrupt, truncated
    or of another format)."""


class TrainingDivergedError(FloatingPointError):
    """A local loss became non-finite; the message names module and
    iteration."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written; the previous one is intact."""


class PipelineStoppedError(RuntimeError):
    """Another rank of the pipeline failed; the message says which and why.
    """
