"""Helpers shared by the command-line tools in ``tools/``."""
import argparse
import ast
import os
import os.path as osp
import sys
from typing import Any, Callable, List, Optional, Tuple

from mmengine.config import Config, DictAction

from auglocal_det.errors import (
    CheckpointWriteError,
    InputError,
    InputFileNotFoundError,
    TrainingDivergedError,
)

__all__ = [
    'USER_ERRORS', 'CfgOptionsAction', 'add_trust_checkpoint_option',
    'load_config', 'parse_option_value', 'run_with_clean_errors'
]

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
        InputError: If the file or one of its ``_base_`` files is not
            valid Python (MMEngine's message names no file).
    """
    if not osp.isfile(path):
        raise InputFileNotFoundError(f'config file {path!r} not found')
    try:
        return Config.fromfile(path)
    except SyntaxError as exc:
        found = _find_syntax_error(path)
        if found is None:
            raise
        filename, error = found
        raise InputError(
            f'config file {filename!r} is not valid Python: {error.msg} '
            f'(line {error.lineno}'
            + (f', column {error.offset}' if error.offset else '') + ')'
            + ('' if osp.abspath(filename) == osp.abspath(path) else
               f'; it is a _base_ of {path!r}')) from exc


def _find_syntax_error(path: str,
                       seen: Optional[List[str]] = None
                       ) -> Optional[Tuple[str, SyntaxError]]:
    """The first file among ``path`` and its local ``_base_`` files that
    does not parse, with its error."""
    seen = [] if seen is None else seen
    if path in seen or not osp.isfile(path):
        return None
    seen.append(path)
    with open(path, encoding='utf-8') as f:
        source = f.read()
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError as exc:
        return path, exc
    for stmt in tree.body:
        if not (isinstance(stmt, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == '_base_'
                for t in stmt.targets)):
            continue
        value = stmt.value
        for base in value.elts if isinstance(
                value, (ast.List, ast.Tuple)) else [value]:
            if isinstance(base, ast.Constant) and isinstance(
                    base.value, str) and '::' not in base.value:
                found = _find_syntax_error(
                    osp.normpath(osp.join(osp.dirname(path), base.value)),
                    seen)
                if found is not None:
                    return found
    return None


def _split_top_level(text: str) -> List[str]:
    """Split ``text`` at the commas outside brackets and quotes."""
    items, depth, quote, start = [], 0, None, 0
    for i, char in enumerate(text):
        if quote:
            quote = None if char == quote else quote
        elif char in '\'"':
            quote = char
        elif char in '([':
            depth += 1
        elif char in ')]':
            depth -= 1
        elif char == ',' and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    return items


def parse_option_value(text: str) -> Any:
    """Parse the value of one ``--cfg-options key=value`` item.

    As MMEngine's ``DictAction``: numbers, ``True``/``False``/``None``,
    lists ``[a,b]`` and tuples ``(a,b)`` (nested too), one pair of quotes
    around the value removed. Unlike ``DictAction``, which deletes every space,
    spaces inside a value are kept (``data_root='my data/'``); only those
    around the value and around list items go.

    Args:
        text (str): The text after the first ``=``.

    Returns:
        The value.
    """
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in '\'"':
        text = text[1:-1]
    if len(text) >= 2 and (text[0], text[-1]) in (('[', ']'), ('(', ')')):
        inner = text[1:-1].strip()
        items = [] if not inner else [
            parse_option_value(item) for item in _split_top_level(inner)
            if item.strip()
        ]
        return items if text[0] == '[' else tuple(items)
    if ',' in text and not any(c in text for c in '[]()'):
        return [parse_option_value(item) for item in text.split(',')]
    return DictAction._parse_int_float_bool(text)


class CfgOptionsAction(argparse.Action):
    """``--cfg-options key=value ...`` into a dict, keeping spaces in values.

    A drop-in for MMEngine's ``DictAction`` (see
    :func:`parse_option_value` for the one difference).
    """

    def __call__(self,
                 parser: argparse.ArgumentParser,
                 namespace: argparse.Namespace,
                 values: Any,
                 option_string: Optional[str] = None) -> None:
        options = dict(getattr(namespace, self.dest, None) or {})
        for item in values or []:
            key, sep, value = item.partition('=')
            if not sep or not key:
                parser.error(f'{option_string}: {item!r} is not key=value')
            options[key] = parse_option_value(value)
        setattr(namespace, self.dest, options)


def add_trust_checkpoint_option(parser: argparse.ArgumentParser,
                                what: str = 'the checkpoint') -> None:
    """Add ``--trust-checkpoint``: unpickle in full a file the user vouches
    for, instead of the safe loader.

    Args:
        parser (argparse.ArgumentParser): The tool's parser.
        what (str): Which file(s) the option covers, for its help.
            Defaults to 'the checkpoint'.
    """
    parser.add_argument(
        '--trust-checkpoint',
        action='store_true',
        help=f'unpickle {what} in full, which runs any code in it; only for '
        'a file you vouch for that needs types beyond those of this '
        'package\'s checkpoints')


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
