"""The rules a benchmark measures, and their configs.

A *rule* is a config file (its ``model`` and ``optim_wrapper``), written as
a path or as a shorthand for one of the ImageNet ResNet-34 configs
(``bp``, ``auglocal-d<d>[-pyr]``, ``dgl``, ``infopro``, ``predsim``,
``mlaan``), optionally followed by ``+OPTION``s that override its memory
options. :func:`parse_rule` reads the name and :func:`rule_configs` gives
the configs to build.
"""
import copy
import os.path as osp
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Sequence, Tuple

from mmengine.config import Config

from auglocal_det.errors import InputError, InputFileNotFoundError

from .cfg_options import check_cfg_options
from .config_types import check_switched_types
from .optim_wrapper_types import AMP_WRAPPERS, LAYERWISE_WRAPPERS

__all__ = ['RULE_CONFIGS', 'OPTIONS', 'RuleSpec', 'parse_rule', 'rule_configs']

#: Config file (under ``configs/``) of each rule shorthand.
RULE_CONFIGS = dict(
    bp='bp_r34_imagenet.py',
    auglocal='auglocal_r34_imagenet.py',
    dgl='dgl_r34_imagenet.py',
    infopro='infopro_r34_imagenet.py',
    predsim='predsim_r34_imagenet.py',
    mlaan='mlaan_r34_imagenet.py')
#: Memory options a rule may add, applied in this order.
OPTIONS = dict(
    plain='every memory option of the config off: plain stem, no '
    'checkpointing, one optimizer step per iteration',
    lean='memory-lean stem (model.backbone.stem_chunk_size=16)',
    cp='gradient checkpointing in the backbone blocks and AugLocal\'s '
    'auxiliary blocks',
    lw='LayerwiseLocalOptimWrapper: each local module stepped right after '
    'its backward')
_AUGLOCAL = re.compile(r'^auglocal-d(\d+)(-pyr)?$')
#: The twin that steps once per iteration, of each per-layer wrapper.
_ITERATION_WRAPPERS = {
    layerwise: plain
    for plain, layerwise in LAYERWISE_WRAPPERS.items()
}


@dataclass
class RuleSpec:
    """A parsed rule.

    Attributes:
        name (str): The rule as written.
        config (str): Its config file.
        base (str): The shorthand (``'bp'``, ``'auglocal'``, ...) or
            ``'config'`` for a path.
        overrides (dict): ``--cfg-options``-style overrides of the
            shorthand (AugLocal's depth and pyramid).
        options (tuple[str]): Memory options, see :data:`OPTIONS`.
    """
    name: str
    config: str
    base: str
    overrides: Dict[str, Any] = field(default_factory=dict)
    options: Tuple[str, ...] = field(default_factory=tuple)

    @property
    def is_reference(self) -> bool:
        """bool: Plain BP, the reference of the ratios."""
        return self.base == 'bp' and not self.options


def parse_rule(name: str, config_dir: str, tau: float = 0.5) -> RuleSpec:
    """Parse ``BASE[+OPTION...]``.

    Args:
        name (str): E.g. ``'auglocal-d4-pyr+plain'`` or
            ``'configs/mlaan_r34_imagenet.py+lw'``.
        config_dir (str): Folder of the shorthands' configs.
        tau (float): Pyramid coefficient of ``-pyr`` rules. Defaults to
            0.5.

    Returns:
        RuleSpec: The parsed rule.

    Raises:
        InputError: For an unknown base or option.
        InputFileNotFoundError: For a config file that does not exist.
    """
    base, *options = name.split('+')
    for option in options:
        if option not in OPTIONS:
            raise InputError(f'--rules: unknown option {option!r} in rule '
                             f'{name!r}; options are {list(OPTIONS)}')
    options = tuple(o for o in OPTIONS if o in options)
    overrides: Dict[str, Any] = {}
    match = _AUGLOCAL.match(base)
    if match:
        overrides = {
            'model.aux_head.depth': int(match.group(1)),
            'model.aux_head.pyramid': bool(match.group(2)),
            'model.aux_head.tau': tau
        }
        kind = 'auglocal'
    elif base in RULE_CONFIGS and base != 'auglocal':
        kind = base
    elif base.endswith('.py'):
        if not osp.isfile(base):
            raise InputFileNotFoundError(
                f'--rules: config {base!r} of rule {name!r} not found')
        return RuleSpec(name, base, 'config', options=options)
    else:
        raise InputError(
            f'--rules: unknown rule {name!r}; expected one of '
            f"{[k for k in RULE_CONFIGS if k != 'auglocal']}, "
            "'auglocal-d<d>', 'auglocal-d<d>-pyr' or a config file, "
            f'optionally followed by +OPTION ({", ".join(OPTIONS)})')
    return RuleSpec(name, osp.join(config_dir, RULE_CONFIGS[kind]), kind,
                    overrides, options)


def _apply_options(model: dict, wrapper: dict,
                   options: Sequence[str]) -> None:
    backbone = model['backbone']
    aux_head = model.get('aux_head')
    augl = isinstance(aux_head, dict) and \
        aux_head.get('type') == 'AugLocalAuxHead'
    for option in options:
        if option in ('plain', 'cp'):
            # every block, every head (the config may select some)
            backbone.pop('cp_stages', None)
            if augl:
                aux_head.pop('cp_max_downsample', None)
        if option == 'plain':
            backbone['stem_chunk_size'] = None
            backbone['with_cp'] = False
            if augl:
                aux_head['with_cp'] = False
            wrapper['type'] = _ITERATION_WRAPPERS.get(
                wrapper['type'], wrapper['type'])
        elif option == 'lean':
            backbone['stem_chunk_size'] = 16
        elif option == 'cp':
            backbone['with_cp'] = True
            if augl:
                aux_head['with_cp'] = True
        elif option == 'lw' and wrapper['type'] in LAYERWISE_WRAPPERS:
            wrapper['type'] = LAYERWISE_WRAPPERS[wrapper['type']]
        elif option == 'lw' and wrapper['type'] not in _ITERATION_WRAPPERS:
            raise InputError(
                f"--rules: +lw needs optim_wrapper.type in "
                f"{sorted(LAYERWISE_WRAPPERS)}, got {wrapper['type']!r}")


def rule_configs(spec: RuleSpec,
                 image_size: int,
                 num_classes: int = 1000,
                 amp: bool = False,
                 cfg_options: Optional[dict] = None) -> Tuple[dict, dict]:
    """The ``model`` and ``optim_wrapper`` configs of a rule.

    Args:
        spec (RuleSpec): The rule.
        image_size (int): Crop size, set as the model's ``image_size``.
        num_classes (int): Number of classes. Defaults to 1000.
        amp (bool): Use the AMP variant of the wrapper (bfloat16).
            Defaults to False.
        cfg_options (dict, optional): Overrides of every rule's config,
            applied last; keys that lead nowhere in ``model`` or
            ``optim_wrapper`` are refused (:func:`check_cfg_options`).
            Defaults to None.

    Returns:
        tuple[dict, dict]: The two configs.
    """
    cfg = Config.fromfile(spec.config)
    if spec.overrides:
        cfg.merge_from_dict(spec.overrides)
    for key in ('model', 'optim_wrapper'):
        if key not in cfg:
            raise InputError(f'--rules: config {spec.config!r} of rule '
                             f'{spec.name!r} has no {key!r}')
    model = copy.deepcopy(cfg.model.to_dict())
    wrapper = copy.deepcopy(cfg.optim_wrapper.to_dict())
    wrapper.setdefault('type', 'OptimWrapper')
    model['num_classes'] = num_classes
    model['image_size'] = image_size
    # the Runner merges the data set's normalisation into the model
    if 'data_preprocessor' not in model and cfg.get('data_preprocessor'):
        model['data_preprocessor'] = copy.deepcopy(
            cfg.data_preprocessor.to_dict())
    _apply_options(model, wrapper, spec.options)
    if amp:
        if wrapper['type'] in AMP_WRAPPERS:
            wrapper['type'] = AMP_WRAPPERS[wrapper['type']]
        elif wrapper['type'] not in AMP_WRAPPERS.values():
            raise InputError(
                f"--amp needs optim_wrapper.type in {sorted(AMP_WRAPPERS)}, "
                f"got {wrapper['type']!r}")
        wrapper['dtype'] = 'bfloat16'
    if cfg_options:
        merged = Config(dict(model=model, optim_wrapper=wrapper))
        # as tools/train.py: a key that would change nothing is refused
        for key in cfg_options:
            if key.split('.')[0] not in ('model', 'optim_wrapper'):
                raise InputError(
                    f'--cfg-options {key}: the benchmark builds only the '
                    "rules' model and optim_wrapper; set keys under "
                    "'model.' or 'optim_wrapper.'")
        scope = cfg.get('default_scope', None)
        check_cfg_options(merged, cfg_options, scope)
        merged.merge_from_dict(cfg_options)
        check_switched_types(merged, cfg_options, scope)
        model = merged.model.to_dict()
        wrapper = merged.optim_wrapper.to_dict()
    return model, wrapper
