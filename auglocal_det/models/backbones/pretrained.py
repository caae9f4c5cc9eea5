"""Validation of the pretrained backbone file a detector starts from.

MMEngine's ``Pretrained`` initializer loads a checkpoint with
``strict=False``: a missing file fails deep inside the runner, and a file
with the wrong keys (a full training checkpoint, a ResNet-50 for a
ResNet-34) is loaded partially with only a warning in the log, so that the
detector silently trains from a mostly random backbone.
:func:`check_backbone_checkpoint` runs before the weights are loaded and
turns each of these cases into an error that names the file and says what
to do.
"""
import os.path as osp
import pickle
import re
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.runner.checkpoint import CheckpointLoader
from torch import nn

from auglocal_det.errors import (
    InputError,
    InputFileNotFoundError,
    UnreadableFileError,
)
from auglocal_det.safe_load import disallowed_globals

from .resnet_depths import resnet_arch_name

__all__ = ['check_backbone_checkpoint', 'describe_resnet_state_dict']

#: Where the export hook writes the backbone inside a training work dir.
_EXPORT_RE = re.compile(
    r'(?:^|.*/)work_dirs/(?P<run>[^/]+)/export/backbone\.pth$')
#: Keys of a classification head that a backbone ignores harmlessly
#: (torchvision's ``fc``; the export's ``torchvision.pth`` carries it).
_HEAD_PREFIXES = ('fc.', )
#: Keys that old checkpoints lack without harm (BN counters, torch < 0.4.1).
_OPTIONAL_SUFFIXES = ('num_batches_tracked', )
_MAX_LISTED = 8
_CFG_KEY = 'model.backbone.init_cfg.checkpoint'


def check_backbone_checkpoint(path: str,
                              model: nn.Module,
                              prefix: Optional[str] = None,
                              map_location: Any = 'cpu') -> Dict[str, Any]:
    """Check that ``path`` holds pretrained weights for ``model``.

    Meant to run in a backbone's ``init_weights`` when its ``init_cfg`` is
    ``dict(type='Pretrained', checkpoint=path)``, before MMEngine loads the
    file. The file may be an exported backbone (``{'state_dict': ...,
    'meta': ...}``), a plain state dict (torchvision's format, whose ``fc``
    keys are ignored), or, with ``prefix`` (``init_cfg.prefix``), any
    checkpoint whose ``prefix``-keys are the backbone's.

    Args:
        path (str): The checkpoint: a local path or an MMEngine URI such as
            ``torchvision://resnet34``.
        model (nn.Module): The backbone the weights are meant for.
        prefix (str, optional): Load only the keys under this prefix, with
            the prefix removed, as MMEngine's ``Pretrained(prefix=...)``
            does. Defaults to None.
        map_location: Passed to the loader. Defaults to ``'cpu'``.

    Returns:
        dict: The backbone's state dict as read from the file (prefix and
        DDP's ``module.`` removed).

    Raises:
        FileNotFoundError: If the local file does not exist. The message
            names the training run that writes it, when the path is an
            export location, and the option that points elsewhere.
        ValueError: If the file cannot be read, is a full training
            checkpoint rather than an exported backbone, or does not fit
            the model (missing, unexpected or differently shaped keys).
    """
    checkpoint = _load(path, map_location)
    state_dict = _extract_state_dict(path, checkpoint, prefix)
    _check_keys(path, state_dict, model)
    return state_dict


def describe_resnet_state_dict(keys: Sequence[str]) -> Optional[str]:
    """Name the ResNet a list of state-dict keys belongs to.

    Args:
        keys (Sequence[str]): Keys with the layout of torchvision's and
            mmdet's ResNet (``layer{i}.{j}.conv1.weight``, ...).

    Returns:
        str or None: For example ``'ResNet-50 (Bottleneck blocks, stages
        (3, 4, 6, 3))'``, or None when the keys hold no residual stage.
    """
    blocks: Dict[int, int] = {}
    bottleneck = False
    for key in keys:
        match = re.match(r'layer(\d+)\.(\d+)\.(\w+)', key)
        if match is None:
            continue
        stage, index = int(match.group(1)), int(match.group(2))
        blocks[stage] = max(blocks.get(stage, 0), index + 1)
        bottleneck |= match.group(3) == 'conv3'
    if not blocks:
        return None
    stages = tuple(blocks[i] for i in sorted(blocks))
    block = 'Bottleneck' if bottleneck else 'BasicBlock'
    arch = resnet_arch_name(block, stages)
    name = f'ResNet-{arch[len("resnet"):]}' if arch else \
        'a ResNet-like network'
    return f'{name} ({block} blocks, stages {stages})'


def _load(path: str, map_location: Any) -> Any:
    """Read the checkpoint, explaining a missing export."""
    if '://' in path:  # torchvision://, https://, ...: MMEngine's loaders
        return CheckpointLoader.load_checkpoint(
            path, map_location=map_location)
    local = osp.expanduser(path)
    if osp.isdir(local):
        hint = ''
        if osp.isfile(osp.join(local, 'backbone.pth')):
            hint = (f' It holds an exported backbone: use '
                    f'{osp.join(path, "backbone.pth")!r}.')
        raise InputError(
            f'pretrained backbone {path!r} is a directory, not a '
            f'checkpoint file.{hint}')
    if not osp.isfile(local):
        raise InputFileNotFoundError(_missing_message(path))
    try:
        # weights only, as MMEngine's Pretrained initializer reads it
        return torch.load(local, map_location=map_location,
                          weights_only=True)
    except pickle.UnpicklingError as exc:  # a full checkpoint, or worse
        raise UnreadableFileError(_unpickling_message(path, local,
                                                      exc)) from exc
    except Exception as exc:  # corrupt, truncated or not a checkpoint
        first_line = (str(exc).strip().splitlines() or [''])[0]
        raise UnreadableFileError(
            f'pretrained backbone {path!r} is not a readable checkpoint of '
            f'weights ({type(exc).__name__}: {first_line}): the file is '
            f'truncated, corrupt or of another format. Point {_CFG_KEY} at '
            'a backbone.pth written by the export') from exc


def _unpickling_message(path: str, local: str, exc: Exception) -> str:
    """The error for a file that needs more than weights to unpickle.

    The export is advised only for a file whose pickle names nothing
    beyond the types of this package's training checkpoints (read without
    unpickling it), which the exporter loads safely.
    """
    try:
        others = disallowed_globals(local)
    except (ValueError, OSError):
        others = None
    if others == []:
        return (f'pretrained backbone {path!r} is not a readable checkpoint '
                'of weights: it holds the numpy values and message hub of a '
                'full training checkpoint. Export its backbone with '
                f'`python tools/model_converters/export_backbone.py {path}` '
                f'and point {_CFG_KEY} at the backbone.pth it writes')
    if others is None:  # legacy format: torch's message names the type
        others = re.findall(r'GLOBAL (\S+) was not', str(exc))
    if not others:
        first_line = (str(exc).strip().splitlines() or [''])[0]
        return (f'pretrained backbone {path!r} is not a readable checkpoint '
                f'of weights (UnpicklingError: {first_line}): the file is '
                'truncated, corrupt or of another format. Point '
                f'{_CFG_KEY} at a backbone.pth written by the export')
    needs = ', '.join(repr(t) for t in others)
    return (f'pretrained backbone {path!r} was not loaded: unpickling it '
            f'needs {needs}, which neither an exported backbone nor a '
            'training checkpoint of this package holds (unpickling runs the '
            f'code a file names). Point {_CFG_KEY} at a backbone.pth '
            'written by the export of a run you trust')


def _missing_message(path: str) -> str:
    """The error for a pretrained file that does not exist."""
    lines = [f'pretrained backbone {path!r} not found.']
    match = _EXPORT_RE.match(path.replace('\\', '/'))
    if match is not None:
        run = match.group('run')
        lines.append(
            f'It is exported by the ImageNet pretraining run '
            f'`python tools/train.py configs/{run}.py` (into '
            f'work_dirs/{run}/export/ at the end of training), or from '
            f'that run\'s checkpoint by `python '
            f'tools/model_converters/export_backbone.py '
            f'work_dirs/{run}/epoch_N.pth`.')
    else:
        lines.append(
            'Exported backbones are written by the ImageNet pretraining '
            'runs (`python tools/train.py configs/<name>_imagenet.py`) to '
            'work_dirs/<name>_imagenet/export/backbone.pth.')
    lines.append(f'To start from another file, add `--cfg-options '
                 f'{_CFG_KEY}=PATH`.')
    return ' '.join(lines)


def _extract_state_dict(path: str, checkpoint: Any,
                        prefix: Optional[str]) -> Dict[str, Any]:
    """Return the backbone's state dict held by ``checkpoint``."""
    if not isinstance(checkpoint, dict):
        raise InputError(
            f'pretrained backbone {path!r} holds a '
            f'{type(checkpoint).__name__}, not a state dict or a '
            f'checkpoint dict')
    state_dict = checkpoint.get('state_dict', checkpoint)
    if not isinstance(state_dict, dict) or not all(
            torch.is_tensor(v) for v in state_dict.values()):
        raise InputError(
            f'pretrained backbone {path!r} is neither an exported backbone '
            f"({{'state_dict': ..., 'meta': ...}}) nor a plain state dict; "
            f'its top-level keys are {_listing(list(checkpoint))}')
    state_dict = OrderedDict(
        (k[len('module.'):] if k.startswith('module.') else k, v)
        for k, v in state_dict.items())

    if prefix:
        prefix = prefix if prefix.endswith('.') else prefix + '.'
        selected = OrderedDict((k[len(prefix):], v)
                               for k, v in state_dict.items()
                               if k.startswith(prefix))
        if not selected:
            raise InputError(
                f'pretrained backbone {path!r} has no key under prefix '
                f'{prefix!r} (init_cfg.prefix); its keys start with '
                f'{_listing(_top_level_names(state_dict))}')
        return selected

    training_parts = [k for k in ('optimizer', 'message_hub') if k in
                      checkpoint]
    nested = _top_level_names(state_dict)
    if training_parts or 'backbone' in nested:
        found = training_parts + [f'{name}.*' for name in nested
                                  if name in ('backbone', 'aux_heads')]
        raise InputError(
            f'pretrained backbone {path!r} is a full training checkpoint '
            f'(it has {", ".join(found)}), not an exported backbone. '
            f'Export its backbone with `python '
            f'tools/model_converters/export_backbone.py {path}` and point '
            f'{_CFG_KEY} at the backbone.pth it writes.')
    return state_dict


def _check_keys(path: str, state_dict: Dict[str, Any],
                model: nn.Module) -> None:
    """Compare the file's keys and shapes with the model's."""
    expected = model.state_dict()
    missing = [
        k for k in expected
        if k not in state_dict and not k.endswith(_OPTIONAL_SUFFIXES)
    ]
    unexpected = [
        k for k in state_dict
        if k not in expected and not k.startswith(_HEAD_PREFIXES)
    ]
    mismatched: List[Tuple[str, tuple, tuple]] = [
        (k, tuple(v.shape), tuple(expected[k].shape))
        for k, v in state_dict.items()
        if k in expected and tuple(v.shape) != tuple(expected[k].shape)
    ]
    if not (missing or unexpected or mismatched):
        return

    depth = getattr(model, 'depth', None)
    model_name = type(model).__name__ + (f' (depth={depth})' if depth else '')
    lines = [f'pretrained backbone {path!r} does not match {model_name}.']
    found = describe_resnet_state_dict(list(state_dict))
    wanted = describe_resnet_state_dict(list(expected))
    if found is not None and found != wanted:
        lines.append(f'The file holds {found}; the model is {wanted}.')
    if missing:
        lines.append(f'Missing keys ({len(missing)}): {_listing(missing)}.')
    if unexpected:
        lines.append(f'Unexpected keys ({len(unexpected)}): '
                     f'{_listing(unexpected)}.')
    if mismatched:
        shapes = [
            f'{k} {tuple(a)} in the file vs {tuple(b)} in the model'
            for k, a, b in mismatched
        ]
        lines.append(f'Shape mismatches ({len(mismatched)}): '
                     f'{_listing(shapes)}.')
    lines.append(f'Point {_CFG_KEY} at a backbone of the same '
                 f'architecture (--cfg-options {_CFG_KEY}=PATH) or change '
                 f'model.backbone to match the file.')
    raise InputError('\n'.join(lines))


def _top_level_names(state_dict: Dict[str, Any]) -> List[str]:
    """First components of the keys, in order of appearance."""
    return list(OrderedDict.fromkeys(k.split('.', 1)[0] for k in state_dict))


def _listing(items: Sequence[Any]) -> str:
    """A short comma-separated listing of ``items``."""
    items = [str(i) for i in items]
    shown = ', '.join(items[:_MAX_LISTED])
    if len(items) > _MAX_LISTED:
        shown += f', ... ({len(items) - _MAX_LISTED} more)'
    return shown
