"""Messages for a config's type names that MMEngine reports as tracebacks.

- **A type name that is not registered** (a typo such as
  ``type='AugLocalAuxHaed'``): MMEngine raises
  ``KeyError: AugLocalAuxHaed is not in the mmdet::model registry``.
  :func:`unknown_type_error` turns it into an
  :class:`~auglocal_det.errors.InputError` that names the config key, the
  near matches and the names this package registers there.
- **A type switched by ``--cfg-options``** (``model.aux_head.type=
  DGLAuxHead`` over a config whose head has ``depth=2``): the other keys of
  the old dict stay and the new class rejects them with a ``TypeError``.
  :func:`check_switched_types` finds such leftover keys before anything is
  built and suggests the ``_delete_`` form that replaces the whole dict.

Only MMEngine is imported: this is a leaf module.
"""
import difflib
import inspect
import re
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple

import mmengine.registry as mmengine_registry
from mmengine.registry import Registry

from auglocal_det.errors import InputError

__all__ = ['unknown_type_error', 'check_switched_types', 'accepted_keys']

_UNKNOWN_RE = re.compile(
    r"'?(?P<type>[\w.]+) is not in the (?:(?P<scope>[\w]+)::)?"
    r'(?P<name>[\w ]+?) registry')
#: Keys every registered class accepts through the build machinery.
_BUILD_KEYS = {'type', '_scope_'}


def _registry(name: str, scope: Optional[str]) -> Optional[Registry]:
    """The registry called ``name`` in ``scope`` (a root or its child)."""
    for value in vars(mmengine_registry).values():
        if isinstance(value, Registry) and value.name == name:
            if scope in (None, value.scope):
                return value
            return value._children.get(scope, value)
    return None


def _names(registry: Registry) -> Dict[str, Any]:
    """Every name ``registry.get`` finds (itself and its parents)."""
    names: Dict[str, Any] = {}
    while registry is not None:
        for key, cls in registry.module_dict.items():
            names.setdefault(key, cls)
        registry = registry.parent
    return names


def _type_paths(cfg: Any, type_name: str, prefix: str = '') -> Iterator[str]:
    """Config keys (``model.aux_head.type``) whose value is ``type_name``."""
    if isinstance(cfg, dict):
        if cfg.get('type') == type_name:
            yield f'{prefix}type'
        for key, value in cfg.items():
            yield from _type_paths(value, type_name, f'{prefix}{key}.')
    elif isinstance(cfg, (list, tuple)):
        for index, value in enumerate(cfg):
            yield from _type_paths(value, type_name, f'{prefix}{index}.')


def _own_names(names: Dict[str, Any]) -> List[str]:
    return sorted(
        key for key, cls in names.items()
        if getattr(cls, '__module__', '').startswith('auglocal_det.'))


def unknown_type_error(exc: KeyError, cfg: Any) -> Optional[InputError]:
    """An input error for MMEngine's "is not in the registry" KeyError.

    Args:
        exc (KeyError): The error raised while building from ``cfg``.
        cfg (Config | dict): The config the runner was built from.

    Returns:
        InputError | None: The error to raise instead, or None if ``exc``
        is another KeyError.
    """
    match = _UNKNOWN_RE.search(str(exc.args[0]) if exc.args else '')
    if match is None:
        return None
    type_name, scope, name = match.group('type', 'scope', 'name')
    registry = _registry(name, scope)
    if registry is None:
        return None
    names = _names(registry)
    close = difflib.get_close_matches(type_name, list(names), n=5, cutoff=0.6)
    paths = sorted(set(_type_paths(_plain(cfg), type_name)))
    where = ', '.join(paths) if paths else 'a type of the config'
    text = (f'{where}: {type_name!r} is not a registered {name} type '
            f'(scope {registry.scope!r})')
    text += (f'; did you mean {" or ".join(map(repr, close))}?'
             if close else '; no registered name is close to it.')
    own = _own_names(names)
    if paths and paths[0].endswith('aux_head.type'):
        own = [n for n in own if n.endswith('AuxHead')]
    if own:
        text += (f' The {name} types of auglocal_det: {", ".join(own)} '
                 f'({len(names)} {name} names are registered in all)')
    else:
        shown = sorted(names)[:30]
        text += f' Registered: {", ".join(shown)}' + (
            f', ... ({len(names) - 30} more)' if len(names) > 30 else '')
    return InputError(text)


def signature_keys(cls: type) -> Tuple[Set[str], bool]:
    """The named keyword arguments of ``cls`` along its ``**kwargs`` chain,
    and whether the chain ends in a ``**kwargs`` nobody names (or an
    ``__init__`` whose signature cannot be read).

    Args:
        cls (type): The class.

    Returns:
        tuple[set[str], bool]: The names, and whether other keywords may
        be accepted too.
    """
    keys: Set[str] = set()
    for klass in getattr(cls, '__mro__', ()):
        init = klass.__dict__.get('__init__')
        if init is None:
            continue
        try:
            params = inspect.signature(init).parameters.values()
        except (TypeError, ValueError):
            return keys, True
        var_kw = False
        for param in params:
            if param.kind is param.VAR_KEYWORD:
                var_kw = True
            elif param.kind in (param.POSITIONAL_OR_KEYWORD,
                                param.KEYWORD_ONLY) and param.name != 'self':
                keys.add(param.name)
        if not var_kw:
            return keys, False
        if klass is object:
            break
    return keys, True


def accepted_keys(cls: type) -> Optional[Set[str]]:
    """The keyword arguments ``cls(...)`` accepts, following ``**kwargs``
    up the class hierarchy; None if some ``__init__`` takes any keyword.

    Args:
        cls (type): The class.

    Returns:
        set[str] | None: The names, or None when unknown/unbounded.
    """
    keys, unbounded = signature_keys(cls)
    return None if unbounded else keys


def _plain(cfg: Any) -> Any:
    """A :class:`~mmengine.config.Config` as nested dicts."""
    return cfg.to_dict() if hasattr(cfg, 'to_dict') else cfg


def _lookup(cfg: Any, path: str) -> Any:
    node = _plain(cfg)
    for part in path.split('.'):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, (list, tuple)) and part.isdigit() and \
                int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def _registry_of(key: str) -> Optional[str]:
    """Name of the registry a ``--cfg-options`` ``...type`` key builds in
    (None for keys this check leaves alone)."""
    parts = key.split('.')
    if parts[0] == 'model':
        return 'model'
    if parts[0] in ('default_hooks', 'custom_hooks'):
        return 'hook'
    if parts[0].endswith('_dataloader') and len(parts) > 1 and \
            parts[1] == 'dataset' and 'pipeline' not in parts:
        return 'dataset'
    return None


def check_switched_types(cfg: Any,
                         cfg_options: Optional[Dict[str, Any]],
                         scope: Optional[str] = None) -> None:
    """Refuse a type switched by ``--cfg-options`` that keeps keys of the
    old type the new one does not take.

    Models, data sets and hooks are checked; a type name that cannot be
    resolved is left to the build (see :func:`unknown_type_error`).

    Args:
        cfg (Config): The config after ``merge_from_dict(cfg_options)``.
        cfg_options (dict, optional): The ``--cfg-options`` (flat keys).
        scope (str, optional): The config's ``default_scope``.

    Raises:
        InputError: Naming the leftover keys and the ``_delete_`` form.
    """
    for key, value in (cfg_options or {}).items():
        if not key.endswith('.type') or not isinstance(value, str):
            continue
        prefix = key[:-len('.type')]
        if f'{prefix}._delete_' in cfg_options:
            continue
        node = _lookup(cfg, prefix)
        name = _registry_of(key)
        registry = _registry(name, scope) if name else None
        cls = registry.get(value) if registry is not None and isinstance(
            node, dict) else None
        if cls is None:
            continue  # an unknown name is reported when it is built
        accepted = accepted_keys(cls)
        if accepted is None:
            continue
        given = {k for k in node if k not in _BUILD_KEYS}
        set_here = {
            k[len(prefix) + 1:].split('.')[0]
            for k in cfg_options if k.startswith(prefix + '.')
        }
        leftover = sorted(given - accepted - set_here)
        if not leftover:
            continue
        keys = ', '.join(f'{prefix}.{k}' for k in leftover)
        options = ' '.join(
            f'{k}={v}' for k, v in cfg_options.items()
            if k.startswith(prefix + '.'))
        raise InputError(
            f'--cfg-options switched {key} to {value!r}, but the config '
            f'keeps {keys} from its previous type, and {value} does not '
            f'take {"them" if len(leftover) > 1 else "it"} '
            f'(--cfg-options merges into the dict, it does not replace it). '
            f'Replace the whole dict: --cfg-options {prefix}._delete_=True '
            f'{options} (then add the {value} options you want)')
