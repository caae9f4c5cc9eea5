"""Safe loading of checkpoint files.

A checkpoint written by :func:`torch.save` is a pickle, and unpickling it
with ``weights_only=False`` runs whatever code the file names. Every
checkpoint the package reads (``--resume``, ``load_from``,
``tools/test.py``, the exporter, the analysis tools) goes through
:func:`load_local_checkpoint`: torch's weights-only unpickler with an
allowlist of exactly the types a full MMEngine checkpoint of this package
holds besides tensors (:func:`checkpoint_safe_globals`: numpy scalars and
arrays, and the message hub's ``HistoryBuffer`` with its statistics
methods). A file that needs any other type is refused with an
:class:`UnsafeCheckpointError` naming the type. The user vouches for a
file with ``--trust-checkpoint``: the tools pass such paths to
:func:`trusted_checkpoints`, and only those exact files are unpickled in
full.

:func:`safe_local_checkpoints` installs the loader for plain local paths in
MMEngine's :class:`~mmengine.runner.CheckpointLoader`;
:class:`~auglocal_det.engine.runner.LocalRunner` enters it around
``load_or_resume`` only. :func:`disallowed_globals` lists, without
unpickling anything, the types a file would need beyond the allowlist.

Nothing here executes the config text MMEngine stores in a checkpoint's
``meta``; :func:`read_config_text` reads such text as data.
"""
import ast
import os.path as osp
import pickle
import re
import threading
from contextlib import contextmanager
from typing import Any, Dict, Iterable, Iterator, List, Optional

import torch
from mmengine.config import Config
from mmengine.runner.checkpoint import CheckpointLoader

from auglocal_det.errors import (
    InputError,
    InputFileNotFoundError,
    UnreadableFileError,
)
from auglocal_det.safe_load import allowlisted as _allowlisted
from auglocal_det.safe_load import checkpoint_safe_globals, disallowed_globals

__all__ = [
    'UnsafeCheckpointError', 'checkpoint_safe_globals', 'disallowed_globals',
    'load_local_checkpoint', 'read_config_text', 'read_dumped_config',
    'safe_local_checkpoints', 'trusted_checkpoints'
]

#: How the tools let the user vouch for a file.
TRUST_OPTION = '--trust-checkpoint'

_trusted_paths: List[str] = []
_trusted_lock = threading.Lock()


class UnsafeCheckpointError(UnreadableFileError):
    """A checkpoint needs types outside the allowlist to be unpickled.

    Args:
        message (str): The message.
        needs (str): What the file needs, e.g. ``"'builtins.exec'"``.
    """

    def __init__(self, message: str, needs: str = '') -> None:
        super().__init__(message)
        self.needs = needs


def _allowlist_names() -> set:
    names = set()
    for entry in checkpoint_safe_globals():
        if isinstance(entry, tuple):
            names.add(entry[1])
        else:
            names.add(f'{entry.__module__}.{entry.__qualname__}')
    return names


def _refused_types(path: str, exc: BaseException) -> str:
    """Names of the types that made the weights-only unpickler refuse."""
    try:
        names = disallowed_globals(path)
    except (ValueError, OSError):
        names = []
    if not names:  # legacy format, or a call refused inside the pickle
        names = [
            name if '.' in name else f'builtins.{name}'
            for name in re.findall(r'GLOBAL (\S+) was not', str(exc))
        ]
    if names:
        return ', '.join(repr(n) for n in names)
    return f'an operation outside the allowlist ({_unpickler_error(exc)})'


def _unpickler_error(exc: BaseException) -> str:
    """The weights-only unpickler's own reason, without torch's advice."""
    lines = [line.strip() for line in str(exc).splitlines()]
    for index, line in enumerate(lines):
        if 'WeightsUnpickler error:' in line:
            rest = line.split('WeightsUnpickler error:', 1)[1].strip()
            following = [x for x in lines[index + 1:] if x]
            return rest or (following[0] if following else '')
    return next((line for line in lines if line), '')


def _is_trusted(path: str) -> bool:
    real = osp.realpath(osp.expanduser(path))
    with _trusted_lock:
        return real in _trusted_paths


@contextmanager
def trusted_checkpoints(paths: Iterable[Optional[str]]) -> Iterator[None]:
    """Unpickle these files in full while the context is open.

    The tools enter it with the file the user named and vouched for with
    ``--trust-checkpoint``; :func:`load_local_checkpoint` reads exactly
    these files (compared by their real path) with ``weights_only=False``.

    Args:
        paths (Iterable[str | None]): The trusted files; None entries are
            ignored.
    """
    real = [osp.realpath(osp.expanduser(p)) for p in paths if p]
    with _trusted_lock:
        _trusted_paths.extend(real)
    try:
        yield
    finally:
        with _trusted_lock:
            for path in real:
                _trusted_paths.remove(path)


def load_local_checkpoint(filename: str,
                          map_location: Optional[Any] = None,
                          trust: bool = False) -> Any:
    """Load a local checkpoint file safely.

    Args:
        filename (str): Path of the checkpoint; ``~`` is expanded.
        map_location: Same as in :func:`torch.load`. Defaults to None.
        trust (bool): Unpickle the file in full, which runs any code it
            names (the user vouched for it). Files entered in
            :func:`trusted_checkpoints` are trusted too. Defaults to False.

    Returns:
        The unpickled object (usually a dict).

    Raises:
        InputFileNotFoundError: If ``filename`` is not an existing file.
        UnsafeCheckpointError: If the file needs types outside the
            allowlist; the message names them and ``--trust-checkpoint``.
        UnreadableFileError: If the file cannot be read otherwise
            (truncated, corrupt, not a checkpoint); the message names it.
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise InputFileNotFoundError(
            f'checkpoint file {filename!r} not found')
    try:
        if trust or _is_trusted(filename):
            return torch.load(
                filename, map_location=map_location, weights_only=False)
        with _allowlisted():
            return torch.load(
                filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if trust or _is_trusted(filename):
            raise UnreadableFileError(
                f'cannot read checkpoint {filename!r}: UnpicklingError: '
                f'{exc}') from exc
        needs = _refused_types(filename, exc)
        raise UnsafeCheckpointError(
            f'checkpoint {filename!r} was not loaded: unpickling it needs '
            f'{needs}, which no checkpoint of this package holds '
            '(unpickling runs the code a file names). If you trust the '
            f'file, add {TRUST_OPTION}', needs) from exc
    except Exception as exc:  # corrupt, truncated or not a checkpoint
        first = (str(exc).strip().splitlines() or [''])[0]
        raise UnreadableFileError(
            f'cannot read checkpoint {filename!r}: {type(exc).__name__}: '
            f'{first}') from exc


@contextmanager
def safe_local_checkpoints() -> Iterator[None]:
    """Make MMEngine read local checkpoint files with
    :func:`load_local_checkpoint` inside the context.

    Affects every MMEngine code path that resolves a plain local path
    through :class:`mmengine.runner.CheckpointLoader` while the context is
    open (``Runner.resume`` and ``Runner.load_checkpoint``); remote schemes
    keep their loaders (torch's weights-only default). MMEngine's own
    loader is back in place afterwards.
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


# ------------------------------------------------------------ config text
def _literal(node: ast.AST) -> Any:
    """The value of a literal expression of a dumped config."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        items = [_literal(e) for e in node.elts]
        return {
            ast.List: list,
            ast.Tuple: tuple,
            ast.Set: set
        }[type(node)](items)
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            raise ValueError('** in a dict display')
        return {
            _literal(k): _literal(v)
            for k, v in zip(node.keys, node.values)
        }
    if isinstance(node, ast.Call) and isinstance(
            node.func, ast.Name) and node.func.id == 'dict' and not node.args:
        if any(k.arg is None for k in node.keywords):
            raise ValueError('** in dict()')
        return {k.arg: _literal(k.value) for k in node.keywords}
    if isinstance(node, ast.UnaryOp) and isinstance(
            node.op, (ast.USub, ast.UAdd)):
        value = _literal(node.operand)
        if isinstance(value, (int, float, complex)) and not isinstance(
                value, bool):
            return -value if isinstance(node.op, ast.USub) else value
    raise ValueError(f'{type(node).__name__} is not a literal')


def read_config_text(text: str, strict: bool = False) -> Dict[str, Any]:
    """Read the top-level settings of config text as data, running none of
    it.

    MMEngine dumps a config (and stores it in every checkpoint's
    ``meta['cfg']``) as assignments of literals and ``dict(...)`` calls.
    Each ``name = <literal>`` statement is read with :mod:`ast`.

    Args:
        text (str): Python config text.
        strict (bool): Raise for a statement that is not such an
            assignment, instead of skipping it. Defaults to False.

    Returns:
        dict: The settings that could be read as data.

    Raises:
        SyntaxError: If ``text`` is not Python.
        ValueError: With ``strict``, for the first statement that cannot
            be read as data (the message gives its line).
    """
    settings: Dict[str, Any] = {}
    for statement in ast.parse(text).body:
        try:
            if not (isinstance(statement, ast.Assign)
                    and len(statement.targets) == 1
                    and isinstance(statement.targets[0], ast.Name)):
                raise ValueError(
                    f'{type(statement).__name__} is not an assignment')
            settings[statement.targets[0].id] = _literal(statement.value)
        except (ValueError, TypeError) as exc:
            if strict:
                raise ValueError(
                    f'line {statement.lineno} cannot be read as data '
                    f'({exc})') from exc
    return settings


def read_dumped_config(path: str) -> Config:
    """The config a run dumped into its work dir, read as data.

    The file is text that a run wrote, not one the user named, so none of
    it is executed: every statement must be an assignment of literals (as
    MMEngine dumps them; :func:`read_config_text` with ``strict=True``).

    Args:
        path (str): The dumped config (``<work_dir>/<name>.py`` or
            ``<work_dir>/<timestamp>/vis_data/config.py``).

    Returns:
        Config: The settings.

    Raises:
        InputError: If a statement is not an assignment of literals; the
            message names the file and the line.
    """
    with open(path, encoding='utf-8') as f:
        text = f.read()
    try:
        settings = read_config_text(text, strict=True)
    except (SyntaxError, ValueError) as exc:
        raise InputError(
            f'{path} is not a config dumped by tools/train.py (assignments '
            f'of literals only): {exc}') from exc
    return Config(settings, filename=path)
