"""Refusal of config values with which a run cannot train.

``max_epochs=0``, ``batch_size=0``, ``persistent_workers=True`` with
``num_workers=0`` or ``lr=nan`` either train nothing without a word or stop
with a traceback once the runner builds the part.
:func:`check_config_values` names the key and its value first.

It imports nothing of the package but its errors: this is a leaf
module.
"""
import math
from typing import Any

from auglocal_det.errors import InputError

__all__ = ['check_config_values']


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_dataloader(name: str, loader: Any) -> None:
    batch_size = loader.get('batch_size', 1)
    if not _is_int(batch_size) or batch_size < 1:
        raise InputError(
            f'{name}.batch_size={batch_size!r}: the batch size must be a '
            'whole number of images, at least 1')
    workers = loader.get('num_workers', 0)
    if not _is_int(workers) or workers < 0:
        raise InputError(
            f'{name}.num_workers={workers!r}: the number of data loading '
            'processes must be a whole number, at least 0 (0 loads in the '
            'training process)')
    if loader.get('persistent_workers', False) and workers == 0:
        raise InputError(
            f'{name}.persistent_workers=True needs worker processes, but '
            f'{name}.num_workers=0 (the data is loaded in the training '
            f'process). Set {name}.persistent_workers=False, or '
            f'{name}.num_workers to 1 or more')


def _check_lr(optim_wrapper: Any, prefix: str = 'optim_wrapper') -> None:
    if not isinstance(optim_wrapper, dict):
        return
    optimizer = optim_wrapper.get('optimizer')
    if not isinstance(optimizer, dict):  # OptimWrapperDict: one per name
        for name, sub in optim_wrapper.items():
            if isinstance(sub, dict) and 'optimizer' in sub:
                _check_lr(sub, f'{prefix}.{name}')
        return
    lr = optimizer.get('lr')
    if lr is None:
        return
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or \
            not math.isfinite(lr) or lr < 0:
        raise InputError(
            f'{prefix}.optimizer.lr={lr!r}: the learning rate must be a '
            'finite number, at least 0')


def check_config_values(cfg: Any, training: bool = True) -> None:
    """Refuse values with which a run cannot do what was asked.

    - a training schedule of no epochs or iterations
      (``train_cfg.max_epochs=0``): it would save and export an untrained
      model;
    - a dataloader's ``batch_size`` below 1, ``num_workers`` below 0, or
      ``persistent_workers=True`` with ``num_workers=0`` (PyTorch stops
      with a traceback when the loader is built);
    - a learning rate that is NaN, infinite or negative.

    Args:
        cfg (Config): The config after ``--cfg-options``.
        training (bool): Check what training reads (schedule, optimizer,
            train and val loaders); False checks the test loader only.
            Defaults to True.

    Raises:
        InputError: Naming the key and its value.
    """
    loaders = ('train_dataloader', 'val_dataloader') if training else \
        ('test_dataloader', )
    for name in loaders:
        loader = cfg.get(name)
        if isinstance(loader, dict):
            _check_dataloader(name, loader)
    if not training:
        return
    train_cfg = cfg.get('train_cfg')
    if isinstance(train_cfg, dict):
        for key in ('max_epochs', 'max_iters'):
            value = train_cfg.get(key)
            if value is not None and (not _is_int(value) or value < 1):
                raise InputError(
                    f'train_cfg.{key}={value!r}: a schedule of no '
                    f'{key[4:]} trains nothing (the checkpoint and the '
                    'export would hold the untrained model); set it to 1 '
                    'or more')
    _check_lr(cfg.get('optim_wrapper'))
