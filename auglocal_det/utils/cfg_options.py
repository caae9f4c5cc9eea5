"""Refusal of ``--cfg-options`` keys that change nothing.

A misspelt key, a top-level variable such as ``max_epochs`` whose value the
file has already used, or a key into ``model.aux_head=None`` is merged by
MMEngine without a word, or fails later with a traceback.
:func:`check_cfg_options` refuses such keys before the merge, naming the
key to set instead; :func:`variable_uses` finds, for a variable of the
config file, the keys computed from it.

It imports nothing of the package but its errors and
:mod:`.config_types`: this is a leaf module.
"""
import ast
import difflib
import os.path as osp
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple

from auglocal_det.errors import InputError

from .config_types import _BUILD_KEYS, _plain, _registry, signature_keys

__all__ = ['check_cfg_options', 'variable_uses']

#: Top-level keys the runner reads (MMEngine's ``Runner.from_cfg`` and the
#: tools); every other top-level key of a config is a variable that is read
#: only while the file is parsed.
_RUNNER_KEYS = {
    'model', 'work_dir', 'train_dataloader', 'val_dataloader',
    'test_dataloader', 'train_cfg', 'val_cfg', 'test_cfg', 'auto_scale_lr',
    'optim_wrapper', 'param_scheduler', 'val_evaluator', 'test_evaluator',
    'default_hooks', 'custom_hooks', 'data_preprocessor', 'load_from',
    'resume', 'launcher', 'env_cfg', 'log_processor', 'log_level',
    'visualizer', 'default_scope', 'randomness', 'experiment_name',
    'runner_type', 'model_wrapper_cfg', 'custom_imports', 'compile',
    'strategy', 'gpu_ids'
}
#: Keys the build machinery consumes on top of a class's arguments, by the
#: registry that builds the dict.
_EXTRA_KEYS = {
    'hook': {'priority'},
    'optim_wrapper': {'paramwise_cfg', 'constructor'},
    'parameter scheduler': {'convert_to_iter_based'},
}
#: Keys of the dicts without ``type`` that MMEngine reads.
_PLAIN_DICT_KEYS = {
    'randomness': {'seed', 'deterministic', 'diff_rank_seed'},
    'env_cfg': {'cudnn_benchmark', 'mp_cfg', 'dist_cfg', 'resource_limit'},
    'auto_scale_lr': {'enable', 'base_batch_size'},
}
_LOOP_KEYS = {
    'train_cfg': {
        'by_epoch', 'max_epochs', 'max_iters', 'val_begin', 'val_interval',
        'dynamic_intervals'
    },
    'val_cfg': {'fp16'},
    'test_cfg': {'fp16'},
}
_DATALOADER_KEYS = {
    'batch_size', 'shuffle', 'sampler', 'batch_sampler', 'num_workers',
    'collate_fn', 'pin_memory', 'drop_last', 'timeout', 'worker_init_fn',
    'multiprocessing_context', 'generator', 'prefetch_factor',
    'persistent_workers', 'pin_memory_device', 'in_order', 'dataset'
}
_MAX_SHOWN = 8


def _role(parts: List[str]) -> Optional[str]:
    """Registry name for the typed dict at ``parts`` (a key path)."""
    top = parts[0] if parts else ''
    if top in ('model', 'data_preprocessor'):
        return 'weight initializer' if 'init_cfg' in parts else 'model'
    if top in ('default_hooks', 'custom_hooks'):
        return 'hook'
    if top.endswith('_dataloader'):
        if 'pipeline' in parts:
            return 'transform'
        if len(parts) == 2 and parts[1] in ('sampler', 'batch_sampler'):
            return 'data sampler'
        return 'dataset' if 'dataset' in parts else None
    if top == 'optim_wrapper':
        return 'optimizer' if 'optimizer' in parts else 'optim_wrapper'
    return {
        'param_scheduler': 'parameter scheduler',
        'train_cfg': 'loop',
        'val_cfg': 'loop',
        'test_cfg': 'loop',
        'val_evaluator': 'metric',
        'test_evaluator': 'metric',
        'log_processor': 'log_processor',
        'visualizer': 'vis_backend' if 'vis_backends' in parts else
        'visualizer',
    }.get(top)


def _class_of(type_name: Any, parts: List[str],
              scope: Optional[str]) -> Optional[type]:
    """The class a typed dict at ``parts`` builds, or None if unknown."""
    if isinstance(type_name, type):
        return type_name
    role = _role(parts)
    if not isinstance(type_name, str) or role is None:
        return None
    candidates = [role] + (['task util'] if role == 'model' else [])
    for name in candidates:
        registry = _registry(name, scope)
        if registry is None:
            continue
        try:
            cls = registry.get(type_name)
        except Exception:  # an unknown scope prefix: left to the build
            cls = None
        if isinstance(cls, type):
            return cls
    return None


def _allowed_new_keys(node: dict, parts: List[str], options: Dict[str, Any],
                      scope: Optional[str]) -> Tuple[Set[str], bool]:
    """The keys a dict of the config may be given that it does not hold yet:
    the arguments of the class it builds (with ``open`` True when that
    class also takes any keyword), or the keys MMEngine reads from it."""
    prefix = '.'.join(parts)
    type_name = options.get(f'{prefix}.type', node.get('type'))
    if len(parts) == 1 and parts[0] in _PLAIN_DICT_KEYS:
        return _PLAIN_DICT_KEYS[parts[0]], False
    if len(parts) == 1 and parts[0].endswith('_dataloader'):
        return set(_DATALOADER_KEYS), False
    if type_name is None:
        if len(parts) == 1 and parts[0] in _LOOP_KEYS:
            return _LOOP_KEYS[parts[0]], False
        if parts == ['optim_wrapper']:
            type_name = 'OptimWrapper'
        else:
            return set(), True  # a plain dict read by code we do not know
    cls = _class_of(type_name, parts, scope)
    if cls is None:
        return set(), True
    keys, open_ = signature_keys(cls)
    keys |= _BUILD_KEYS | _EXTRA_KEYS.get(_role(parts) or '', set())
    if parts[0] in ('train_cfg', 'val_cfg', 'test_cfg'):
        keys |= _LOOP_KEYS[parts[0]]
    return keys, open_


def _near(name: str, names: Any, cutoff: float = 0.75) -> List[str]:
    return difflib.get_close_matches(name, sorted(names), n=3, cutoff=cutoff)


def _shown(names: Any) -> str:
    names = sorted(names)
    text = ', '.join(names[:_MAX_SHOWN])
    return text + (f', ... ({len(names) - _MAX_SHOWN} more)'
                   if len(names) > _MAX_SHOWN else '')


def _check_option_key(cfg: dict, key: str, options: Dict[str, Any],
                      scope: Optional[str], filename: Optional[str]) -> None:
    """Walk ``key`` through ``cfg``; raise if it names nothing there."""
    parts = key.split('.')
    node: Any = cfg
    for depth, part in enumerate(parts):
        here = parts[:depth]
        where = '.'.join(here)
        if part == '_delete_':
            return
        if isinstance(node, (list, tuple)):
            if not (part.isdigit() and int(part) < len(node)):
                raise InputError(
                    f'--cfg-options {key}: {where} is a list of '
                    f'{len(node)} entries (indices 0 to {len(node) - 1}), '
                    f'so it has no entry {part!r}')
            node = node[int(part)]
            continue
        if not isinstance(node, dict):
            kind = 'None' if node is None else \
                f'{type(node).__name__} {node!r}'
            raise InputError(
                f'--cfg-options {key}: {where} is {kind} in the config, '
                f'not a dict, so it has no key {part!r}. To set {where} as '
                f'a whole dict, replace it: --cfg-options {where}._delete_'
                f'=True {where}.type=... followed by its other keys')
        if part in node:
            if depth == 0 and part not in _RUNNER_KEYS:
                _refuse_parse_time_variable(filename, key, part)
            if f'{".".join(parts[:depth + 1])}._delete_' in options:
                return  # the option replaces the whole dict
            node = node[part]
            continue
        if depth == 0:
            if part in _RUNNER_KEYS:
                return
            near = _near(part, set(node) | _RUNNER_KEYS)
            raise InputError(
                f'--cfg-options {key}: the config has no top-level key '
                f'{part!r}, and the runner reads no such key, so the value '
                'would change nothing' +
                (f'; did you mean {" or ".join(near)}?' if near else ''))
        allowed, open_ = _allowed_new_keys(node, here, options, scope)
        if part in allowed or f'{".".join(parts[:depth + 1])}.type' in \
                options:
            return  # a new argument, or a new dict given with its type
        known = set(node) | allowed
        near = _near(part, known)
        if open_ and not near:
            return  # taken by **kwargs, or read by code we do not know
        type_name = options.get(f'{where}.type', node.get('type'))
        owner = f'{where} ({type_name})' if isinstance(type_name, str) \
            else where
        raise InputError(
            f'--cfg-options {key}: {owner} has no key {part!r}' +
            ('' if open_ else ' and does not take one') +
            (f'; did you mean {" or ".join(near)}?' if near else
             f'; its keys are {_shown(known - _BUILD_KEYS)}'))


def _refuse_parse_time_variable(filename: Optional[str], key: str,
                                name: str) -> None:
    uses = variable_uses(filename, name) if filename else []
    instead = ('set ' + ', '.join(uses) + ' instead' if uses else
               'set the keys that use its value instead')
    raise InputError(
        f'--cfg-options {key}: {name!r} is a variable of the config file, '
        'read only while the file was parsed; the runner never reads it, so '
        f'changing it now would change nothing. {instead[0].upper()}'
        f'{instead[1:]}')


def check_cfg_options(cfg: Any,
                      cfg_options: Optional[Dict[str, Any]],
                      scope: Optional[str] = None) -> None:
    """Refuse ``--cfg-options`` keys that would change nothing.

    Run on the config *before* ``merge_from_dict(cfg_options)``. A key must
    lead through the config's dicts and lists (list indices included) to
    a key the config has, or to an argument of the class a dict builds
    (``default_hooks.checkpoint.save_optimizer``), or create a dict
    together with its ``type``. Refused, with the keys to set instead:

    - misspelt keys (``tarin_cfg.max_epochs``, ``train_cfg.max_epoch``);
    - top-level variables of the config file (``max_epochs``,
      ``data_root``): MMEngine has already substituted their values where
      the file uses them;
    - keys into a value that is not a dict (``model.aux_head.depth`` where
      ``model.aux_head=None``).

    Args:
        cfg (Config): The config as loaded from its file.
        cfg_options (dict, optional): The ``--cfg-options`` (flat keys).
        scope (str, optional): The config's ``default_scope``.

    Raises:
        InputError: Naming the key and what to set instead.
    """
    filename = getattr(cfg, 'filename', None)
    plain = _plain(cfg)
    for key in cfg_options or {}:
        _check_option_key(plain, key, cfg_options, scope, filename)


def _expression_uses(node: ast.AST, name: str, prefix: str) -> Iterator[str]:
    """Key paths below ``prefix`` whose value expression reads ``name``."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
            node.func.id == 'dict' and not node.args:
        for keyword in node.keywords:
            if keyword.arg is None:
                if _reads(keyword.value, name):
                    yield prefix
            else:
                yield from _expression_uses(keyword.value, name,
                                            f'{prefix}.{keyword.arg}')
    elif isinstance(node, ast.Dict) and all(
            isinstance(k, ast.Constant) and isinstance(k.value, str)
            for k in node.keys):
        for k, v in zip(node.keys, node.values):
            yield from _expression_uses(v, name, f'{prefix}.{k.value}')
    elif isinstance(node, (ast.List, ast.Tuple)) and not any(
            isinstance(e, ast.Starred) for e in node.elts):
        for index, element in enumerate(node.elts):
            yield from _expression_uses(element, name, f'{prefix}.{index}')
    elif _reads(node, name):
        yield prefix


def _reads(node: ast.AST, name: str) -> bool:
    return any(
        isinstance(n, ast.Name) and n.id == name for n in ast.walk(node))


def _config_files(filename: str) -> List[str]:
    """``filename`` and its local ``_base_`` files (packages' left out)."""
    files, todo = [], [osp.abspath(filename)]
    while todo:
        path = todo.pop(0)
        if path in files or not osp.isfile(path):
            continue
        files.append(path)
        try:
            with open(path, encoding='utf-8') as f:
                tree = ast.parse(f.read())
        except (OSError, SyntaxError, ValueError):
            continue
        for stmt in tree.body:
            if isinstance(stmt, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == '_base_'
                    for t in stmt.targets):
                value = stmt.value
                bases = value.elts if isinstance(
                    value, (ast.List, ast.Tuple)) else [value]
                todo += [
                    osp.join(osp.dirname(path), b.value) for b in bases
                    if isinstance(b, ast.Constant) and isinstance(
                        b.value, str) and '::' not in b.value
                ]
    return files


def variable_uses(filename: str, name: str) -> List[str]:
    """The config keys computed from a top-level variable of a config file.

    Looks at the assignments of ``filename`` and its local ``_base_``
    files; a variable used by another variable is followed to the keys
    that use that one.

    Args:
        filename (str): The config file.
        name (str): The top-level variable (``max_epochs``).

    Returns:
        list[str]: Key paths such as ``train_cfg.max_epochs`` or
        ``param_scheduler.1.end``, in order of appearance.
    """
    assignments = []
    for path in _config_files(filename):
        try:
            with open(path, encoding='utf-8') as f:
                tree = ast.parse(f.read())
        except (OSError, SyntaxError, ValueError):
            continue
        assignments += [(t.id, stmt.value) for stmt in tree.body
                        if isinstance(stmt, ast.Assign)
                        for t in stmt.targets if isinstance(t, ast.Name)]
    uses: List[str] = []
    seen = {name}
    todo = [name]
    while todo:
        variable = todo.pop(0)
        for target, value in assignments:
            paths = list(_expression_uses(value, variable, target))
            if not paths:
                continue
            if target in _RUNNER_KEYS:
                uses += [p for p in paths if p not in uses]
            elif target not in seen:  # another variable: follow it
                seen.add(target)
                todo.append(target)
    return uses
