"""The export folder, written as a whole.

The files of an export go to a hidden folder next to the export folder
(``.export.<random>.incomplete``), which is renamed into place once
complete, so a reader sees the previous export or the new one, never a
mix. A folder left by an interrupted export is removed (or, if the export
folder itself is missing, the previous export it holds is put back) by the
next export. :func:`check_export_target` refuses to replace the export of
another checkpoint unless the caller passes ``overwrite``.
"""
import json
import os
import os.path as osp
import re
import shutil
import tempfile
from typing import Any, Callable, Dict, List, Optional

from auglocal_det.errors import InputError

__all__ = [
    'clean_interrupted_exports', 'read_export', 'describe_export',
    'check_export_target'
]

EXPORT_FILES = ('backbone.pth', 'torchvision.pth', 'backbone.json')
#: Suffixes of the hidden folders of an export being written and of the
#: export it replaces.
_INCOMPLETE = '.incomplete'
_REPLACED = '.replaced'
#: Temporary files of an export file written in place (older exports).
_STALE_FILE_RE = re.compile(r'^\.(backbone\.pth|torchvision\.pth|'
                            r'backbone\.json)\.[a-z0-9_]+\.tmp$')


def _hidden_folders(out_dir: str) -> List[str]:
    """Folders left next to ``out_dir`` by interrupted exports."""
    parent, name = osp.split(osp.abspath(out_dir))
    pattern = re.compile(r'^\.' + re.escape(name) + r'\.[A-Za-z0-9_]+(' +
                         re.escape(_INCOMPLETE) + '|' +
                         re.escape(_REPLACED) + r')$')
    if not osp.isdir(parent):
        return []
    return sorted(
        osp.join(parent, entry) for entry in os.listdir(parent)
        if pattern.match(entry) and osp.isdir(osp.join(parent, entry)))


def clean_interrupted_exports(out_dir: str) -> List[str]:
    """Remove what an interrupted export left next to ``out_dir``.

    A half-written export (``.<name>.<random>.incomplete``) is removed. A
    previous export moved aside for its replacement
    (``.<name>.<random>.replaced``) is moved back if ``out_dir`` is
    missing (the process was killed between the two renames), and removed
    otherwise. Temporary files that exports writing file by file left
    inside ``out_dir`` (``.backbone.pth.<random>.tmp``) are removed.

    Args:
        out_dir (str): The export folder.

    Returns:
        list[str]: The folders removed or moved back.
    """
    handled = []
    for folder in _hidden_folders(out_dir):
        if folder.endswith(_REPLACED) and not osp.lexists(out_dir):
            os.rename(folder, out_dir)
        else:
            shutil.rmtree(folder, ignore_errors=True)
        handled.append(folder)
    if osp.isdir(out_dir):
        for entry in os.listdir(out_dir):
            if _STALE_FILE_RE.match(entry):
                os.remove(osp.join(out_dir, entry))
                handled.append(osp.join(out_dir, entry))
    return handled


def _fsync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_whole_folder(out_dir: str, write: Callable[[str], None]) -> None:
    """Call ``write`` on a new hidden folder, then rename it to
    ``out_dir``, replacing the previous ``out_dir`` if there is one."""
    out_dir = osp.abspath(out_dir)
    parent, name = osp.split(out_dir)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(dir=parent, prefix=f'.{name}.',
                               suffix=_INCOMPLETE)
    replaced = None
    try:
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(staging, 0o777 & ~mask)
        write(staging)
        _fsync_dir(staging)
        if osp.lexists(out_dir):
            replaced = staging[:-len(_INCOMPLETE)] + _REPLACED
            os.rename(out_dir, replaced)
        os.rename(staging, out_dir)
        staging = None
        _fsync_dir(parent)
    except BaseException:
        if replaced is not None and not osp.lexists(out_dir):
            os.rename(replaced, out_dir)
            replaced = None
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        if replaced is not None:
            shutil.rmtree(replaced, ignore_errors=True)


def read_export(out_dir: str) -> Optional[Dict[str, Any]]:
    """The export held by ``out_dir``, if any.

    Args:
        out_dir (str): An export folder.

    Returns:
        dict | None: None if ``out_dir`` holds none of the export files;
        otherwise the content of its ``backbone.json`` (an empty dict if
        that file is missing or unreadable).
    """
    if not osp.isdir(out_dir) or not any(
            osp.exists(osp.join(out_dir, f)) for f in EXPORT_FILES):
        return None
    try:
        with open(osp.join(out_dir, 'backbone.json'), encoding='utf-8') as f:
            sidecar = json.load(f)
    except (OSError, ValueError):
        return {}
    return sidecar if isinstance(sidecar, dict) else {}


def describe_export(sidecar: Dict[str, Any]) -> str:
    """Where an export came from, in a few words, for messages."""
    if not sidecar:
        return 'a backbone of unknown origin (no readable backbone.json)'
    origin = sidecar.get('source_checkpoint') or sidecar.get('work_dir')
    what = f'the backbone exported from {origin!r}' if origin else \
        'an exported backbone'
    details = [
        str(sidecar[k]) for k in ('exported_by', 'created') if sidecar.get(k)
    ]
    return what + (f' ({", ".join(details)})' if details else '')


def check_export_target(out_dir: str,
                        source_sha256: Optional[str],
                        overwrite: bool = False,
                        advice: Optional[str] = None,
                        replacement: str = 'the export of another checkpoint'
                        ) -> None:
    """Refuse to write an export where it would replace another one.

    ``out_dir`` may be missing, empty or hold an export of the same
    checkpoint (same SHA-256 in its ``backbone.json``); with
    ``overwrite`` it may hold any export. Files other than an export's are
    never replaced: the export replaces its folder as a whole.

    Args:
        out_dir (str): The export folder.
        source_sha256 (str, optional): SHA-256 of the checkpoint about to
            be exported (None for an in-memory model).
        overwrite (bool): Replace an export of another checkpoint.
            Defaults to False.
        advice (str, optional): What the user can do, ending the message.
            Defaults to exporting elsewhere with ``--out-dir`` or passing
            ``--overwrite``.
        replacement (str): What would replace the export, for the
            message. Defaults to 'the export of another checkpoint'.

    Raises:
        InputError: Naming ``out_dir``, what it holds and the way out.
    """
    if not osp.lexists(out_dir):
        return
    if not osp.isdir(out_dir):
        raise InputError(f'export folder {out_dir!r} is not a folder')
    others = sorted(
        name for name in os.listdir(out_dir)
        if name not in EXPORT_FILES and not _STALE_FILE_RE.match(name))
    if others:
        shown = ', '.join(others[:4]) + (', ...' if len(others) > 4 else '')
        raise InputError(
            f'export folder {out_dir!r} holds files that are not part of an '
            f'export ({shown}); an export replaces its folder as a whole, '
            'so give it a folder of its own (e.g. --out-dir '
            f'{osp.join(out_dir, "export")})')
    existing = read_export(out_dir)
    if existing is None or overwrite:
        return
    if source_sha256 and existing.get('source_sha256') == source_sha256:
        return  # the same checkpoint again
    advice = advice or ('Export elsewhere with --out-dir DIR, or pass '
                        '--overwrite to replace it')
    raise InputError(
        f'export folder {out_dir!r} already holds '
        f'{describe_export(existing)}, which detector configs may load; '
        f'refusing to replace it by {replacement}. {advice}')
