"""Checks of a checkpoint against the run that loads it.

MMEngine 0.10 loads a checkpoint's weights with ``strict=False``: missing,
unexpected and differently shaped weights are log lines, so a ``--resume``
of another model, a ``load_from`` of an exported backbone (whose keys lack
the ``backbone.`` prefix) or ``tools/test.py`` with another model's
checkpoint go on with random weights. ``Runner.resume`` restores what the
file holds and skips the rest without a word: a checkpoint saved without
optimizer state (``save_optimizer=False``) resumes with a fresh optimizer,
whose learning rate the restored schedulers then compute from the wrong
starting value.

:class:`~auglocal_det.engine.runner.LocalRunner` calls
:func:`check_model_fit` and :func:`check_resume_state` before anything is
loaded, and logs :func:`schedule_end_message` after a resume.
"""
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from auglocal_det.errors import InputError
from auglocal_det.models.backbones.pretrained import describe_resnet_state_dict

from .checkpoint import read_config_text

__all__ = [
    'check_model_fit', 'check_resume_state', 'schedule_end_message',
    'describe_checkpoint_config'
]

_MAX_LISTED = 4
#: Keys that checkpoints of older PyTorch lack without harm.
_OPTIONAL_SUFFIXES = ('num_batches_tracked', )


def _listing(keys: Sequence[str]) -> str:
    shown = ', '.join(keys[:_MAX_LISTED])
    more = len(keys) - _MAX_LISTED
    return shown + (f', ... ({more} more)' if more > 0 else '')


def _state_dict(checkpoint: Any,
                revise_keys: Sequence[Tuple[str, str]]) -> Dict[str, Any]:
    state = checkpoint.get('state_dict', checkpoint) \
        if isinstance(checkpoint, dict) else {}
    if not isinstance(state, dict):
        return {}
    revised = {}
    for key, value in state.items():
        for pattern, replacement in revise_keys:
            key = re.sub(pattern, replacement, key)
        revised[key] = value
    return revised


def describe_checkpoint_config(checkpoint: Any) -> Optional[str]:
    """Say which run wrote a checkpoint, from its ``meta``, read as data.

    Args:
        checkpoint (dict): The loaded checkpoint.

    Returns:
        str | None: E.g. ``"the run 'bp_r18_20261207_101010' (model
        LocalImageClassifier, backbone LocalResNet depth 18, aux_head
        None)"``, or None when the file says nothing.
    """
    meta = checkpoint.get('meta') if isinstance(checkpoint, dict) else None
    if not isinstance(meta, dict):
        return None
    name = meta.get('experiment_name')
    model = None
    text = meta.get('cfg')
    if isinstance(text, str):
        try:  # reads literals only; runs nothing of the text
            model = read_config_text(text).get('model')
        except Exception:  # text that is not a dumped config
            model = None
    parts = []
    if isinstance(model, dict):
        parts.append(f'model {model.get("type")}')
        backbone = model.get('backbone')
        if isinstance(backbone, dict):
            depth = backbone.get('depth')
            parts.append(f'backbone {backbone.get("type")}' +
                         (f' depth {depth}' if depth is not None else ''))
        if 'aux_head' in model:
            head = model['aux_head']
            parts.append('aux_head ' + (
                f'{head.get("type")} depth {head.get("depth")}'
                if isinstance(head, dict) and 'depth' in head else
                str(head.get('type') if isinstance(head, dict) else head)))
    if name is None and not parts:
        return None
    text = f'the run {name!r}' if name else 'its run'
    return text + (f' ({", ".join(parts)})' if parts else '')


def _backbone_description(keys: Sequence[str]) -> Optional[str]:
    return describe_resnet_state_dict(
        [k[len('backbone.'):] for k in keys if k.startswith('backbone.')])


def check_model_fit(checkpoint: Any,
                    model: nn.Module,
                    filename: str,
                    resuming: bool = False,
                    revise_keys: Sequence[Tuple[str, str]] = (
                        (r'^module\.', ''), )) -> None:
    """Refuse a checkpoint whose weights are not exactly those of
    ``model``.

    Args:
        checkpoint (dict): The loaded checkpoint (``state_dict`` or a plain
            state dict).
        model (nn.Module): The model (unwrapped).
        filename (str): The file, for the message.
        resuming (bool): Whether the file is a ``--resume`` checkpoint.
            Defaults to False (``load_from``, ``tools/test.py``).
        revise_keys (Sequence[tuple[str, str]]): Regex substitutions applied
            to the file's keys first, as ``Runner.load_checkpoint`` does.

    Raises:
        InputError: Naming the first missing, unexpected and differently
            shaped keys and the file that fits.
    """
    state = _state_dict(checkpoint, revise_keys)
    expected = model.state_dict()
    missing = [
        k for k in expected
        if k not in state and not k.endswith(_OPTIONAL_SUFFIXES)
    ]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f'{k} {tuple(state[k].shape)} in the file, '
        f'{tuple(expected[k].shape)} in the model' for k in expected
        if k in state and torch.is_tensor(state[k])
        and torch.is_tensor(expected[k])
        and state[k].shape != expected[k].shape
    ]
    if not (missing or unexpected or shapes):
        return

    what = ('--resume: the checkpoint' if resuming else 'the checkpoint')
    problems = []
    if missing:
        problems.append(f'{len(missing)} weights of the model are missing '
                        f'({_listing(missing)})')
    if unexpected:
        problems.append(f'{len(unexpected)} weights are not in the model '
                        f'({_listing(unexpected)})')
    if shapes:
        problems.append(f'{len(shapes)} have another shape '
                        f'({_listing(shapes)})')
    text = (f'{what} {filename!r} does not fit the model of the config: '
            f'{"; ".join(problems)}.')

    file_keys = [k for k in state if not k.startswith('fc.')]
    if file_keys and all(f'backbone.{k}' in expected for k in file_keys):
        raise InputError(
            text + ' It holds the weights of a backbone alone (an exported '
            'backbone). Load it into the backbone with '
            "model.backbone.init_cfg=dict(type='Pretrained', "
            f"checkpoint='{filename}') (in the detection configs: "
            f'--cfg-options model.backbone.init_cfg.checkpoint={filename}) '
            'and leave load_from unset')

    model_arch = _backbone_description(list(expected))
    file_arch = _backbone_description(list(state))
    if model_arch and file_arch and model_arch != file_arch:
        text += (f' The file holds a {file_arch} backbone; the model\'s is '
                 f'a {model_arch}.')
    differing = missing + unexpected + [s.split(' ')[0] for s in shapes]
    if all(k.startswith('aux_heads.') for k in differing):
        text += (' Only the auxiliary heads differ (model.aux_head: another '
                 'type, depth or number of heads).')
    source = describe_checkpoint_config(checkpoint)
    if source:
        text += f' The file was written by {source}.'
    backbone_fits = any(k.startswith('backbone.') for k in expected) and all(
        not k.startswith('backbone.') for k in differing)
    if backbone_fits and not resuming:
        text += (' Its backbone fits: to start from it, export it with '
                 f'`python tools/model_converters/export_backbone.py '
                 f'{filename}` and point model.backbone.init_cfg at the '
                 'backbone.pth it writes.')
    elif resuming:
        text += (' Resume with the config the checkpoint was written with, '
                 'or give --resume a checkpoint of this config.')
    else:
        text += (' Use a checkpoint written with this config, or the config '
                 'the checkpoint was written with.')
    raise InputError(text)


def _group_sizes(state: Any, prefix: str = '') -> Dict[str, List[int]]:
    """Parameters per group of each optimizer in an optimizer state dict
    (an ``OptimWrapperDict``'s holds one per name)."""
    if not isinstance(state, dict):
        return {}
    groups = state.get('param_groups')
    if isinstance(groups, list):
        return {
            prefix: [
                len(g.get('params', [])) if isinstance(g, dict) else 0
                for g in groups
            ]
        }
    sizes: Dict[str, List[int]] = {}
    for key, value in state.items():
        sizes.update(
            _group_sizes(value, f'{prefix}.{key}' if prefix else str(key)))
    return sizes


def check_resume_state(checkpoint: Any,
                       filename: str,
                       optim_wrapper: Any = None,
                       param_schedulers: Any = None,
                       resume_optimizer: bool = True,
                       resume_param_scheduler: bool = True) -> None:
    """Refuse to resume from a checkpoint that cannot continue the run.

    Args:
        checkpoint (dict): The loaded ``--resume`` checkpoint.
        filename (str): The file, for the message.
        optim_wrapper (OptimWrapper, optional): The run's built optimizer
            wrapper, whose parameter groups the file's must match.
        param_schedulers (optional): The run's schedulers (None if the
            config has none).
        resume_optimizer (bool): Whether the optimizer state is resumed.
        resume_param_scheduler (bool): Whether the schedulers are resumed.

    Raises:
        InputError: If the file lacks the optimizer or scheduler state (it
            was saved with ``save_optimizer=False`` or
            ``save_param_scheduler=False``), or its optimizer has other
            parameter groups than the run's.
    """
    if not isinstance(checkpoint, dict):
        return
    absent = []
    if resume_optimizer and 'optimizer' not in checkpoint:
        absent.append(('optimizer', 'save_optimizer'))
    if resume_param_scheduler and param_schedulers and \
            'param_schedulers' not in checkpoint:
        absent.append(('learning-rate scheduler', 'save_param_scheduler'))
    if absent:
        epoch = (checkpoint.get('meta') or {}).get('epoch')
        where = f' after epoch {epoch}' if epoch is not None else ''
        states = ' and no '.join(name for name, _ in absent)
        options = ' and '.join(
            f'default_hooks.checkpoint.{option}=False'
            for _, option in absent)
        raise InputError(
            f'--resume: the checkpoint {filename!r} holds no {states} state '
            f'(it was saved with {options}), so training would go on'
            f'{where} with a fresh optimizer: no momentum, and a learning '
            'rate that does not follow the schedule. Resume from a '
            'checkpoint saved with that state (the default), or start a new '
            f'run from these weights: --cfg-options load_from={filename} '
            'without --resume (the schedule starts again from its first '
            'epoch)')
    if not resume_optimizer or optim_wrapper is None or \
            not hasattr(optim_wrapper, 'state_dict') or \
            not isinstance(checkpoint.get('optimizer'), dict):
        return
    theirs = _group_sizes(checkpoint['optimizer'])
    ours = _group_sizes(optim_wrapper.state_dict())
    if theirs == ours:
        return

    def describe(sizes: Dict[str, List[int]]) -> str:
        return '; '.join(
            (f'{name}: ' if name else '') +
            f'{len(groups)} parameter group(s) of '
            f'{", ".join(map(str, groups))} parameters'
            for name, groups in sizes.items())

    raise InputError(
        f'--resume: the optimizer state in {filename!r} does not fit the '
        f'optimizer of the config: the file has {describe(theirs)}, the '
        f'config\'s optimizer {describe(ours)} (the model or '
        'optim_wrapper.paramwise_cfg changed). Resume with the config the '
        'checkpoint was written with')


def schedule_end_message(param_schedulers: Any, train_loop: Any,
                         optim_wrapper: Any,
                         filename: str) -> Optional[str]:
    """Say when a resumed schedule ends before the run does.

    Schedulers restored from a checkpoint keep the ``begin`` and ``end``
    they were saved with (their state replaces the config's), so a finished
    run resumed with a larger ``train_cfg.max_epochs`` trains the extra
    epochs at the flat learning rate its schedule ended with.

    Args:
        param_schedulers: The run's schedulers (a list, or a dict of lists
            for several optimizers), after the resume.
        train_loop: The built train loop.
        optim_wrapper: The built optimizer wrapper.
        filename (str): The checkpoint, for the message.

    Returns:
        str | None: The warning to log, or None when the schedule covers
        the run.
    """
    if not param_schedulers:
        return None
    schedulers = (
        [s for group in param_schedulers.values() for s in group]
        if isinstance(param_schedulers, dict) else list(param_schedulers))
    max_iters = getattr(train_loop, 'max_iters', None)
    start = getattr(train_loop, 'iter', 0)
    dataloader = getattr(train_loop, 'dataloader', None)
    try:
        per_epoch = len(dataloader) if dataloader is not None else None
    except TypeError:
        per_epoch = None
    if not schedulers or not max_iters:
        return None
    ends = []
    for scheduler in schedulers:
        end = getattr(scheduler, 'end', None)
        if end is None or end >= 1e9:  # no end
            return None
        if getattr(scheduler, 'by_epoch', False):
            if not per_epoch:
                return None
            end *= per_epoch
        ends.append(end)
    last = max(ends)
    if last >= max_iters or start >= max_iters:
        return None
    try:
        lrs = optim_wrapper.get_lr()['lr']
        rate = ', '.join(f'{lr:.3g}' for lr in sorted(set(lrs)))
    except Exception:  # a wrapper without get_lr: the rate is not shown
        rate = 'its last value'
    when = f'iteration {last}'
    if per_epoch:
        when += f' (epoch {last / per_epoch:g})'
        total = f'train_cfg.max_epochs={max_iters // per_epoch}'
    else:
        total = f'train_cfg.max_iters={max_iters}'
    return (
        f'--resume: the learning-rate schedule restored from {filename!r} '
        f'ends at {when}, before the {max_iters} iterations of {total}: '
        f'from there on the learning rate stays at {rate}. Schedulers '
        'resumed from a checkpoint keep the end they were saved with (the '
        "config's param_scheduler is not used). To give the extra epochs "
        'a schedule of their own, start a new run from the weights: '
        '--cfg-options load_from=PATH without --resume, with a '
        'param_scheduler for them')
