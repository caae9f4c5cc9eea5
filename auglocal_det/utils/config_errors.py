"""Messages for config mistakes MMEngine reports as tracebacks, or not
at all.

- **A type name that is not registered** (a typo such as
  ``type='AugLocalAuxHaed'``): :func:`unknown_type_error` turns MMEngine's
  ``KeyError`` into an :class:`~auglocal_det.errors.InputError` that names
  the config key, the near matches and the names this package registers
  there (:mod:`.config_types`).
- **A type switched by ``--cfg-options``** over keys of the old type:
  :func:`check_switched_types` finds the leftover keys before anything is
  built and suggests the ``_delete_`` form (:mod:`.config_types`).
- **``--cfg-options`` keys that change nothing** (a misspelt key, a
  top-level variable such as ``max_epochs`` whose value the file has
  already used, a key into ``model.aux_head=None``):
  :func:`check_cfg_options` refuses them before the merge, naming the key
  to set instead (:mod:`.cfg_options`).
- **Values that cannot train** (``max_epochs=0``, ``batch_size=0``,
  ``persistent_workers=True`` with ``num_workers=0``, ``lr=nan``):
  :func:`check_config_values` names the key (:mod:`.config_values`).

This module gathers the checks the tools call; each lives in its own
module.
"""
from .cfg_options import check_cfg_options, variable_uses
from .config_types import (
    accepted_keys,
    check_switched_types,
    unknown_type_error,
)
from .config_values import check_config_values

__all__ = [
    'unknown_type_error', 'check_switched_types', 'accepted_keys',
    'check_cfg_options', 'variable_uses', 'check_config_values'
]
