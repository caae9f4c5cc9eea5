"""Measure what a training rule costs: memory, time and FLOPs.

The library side of ``tools/analysis_tools/benchmark.py``. A *rule* is a
config file (its ``model`` and ``optim_wrapper``), written as a path or as a
shorthand for one of the ImageNet ResNet-34 configs (``bp``,
``auglocal-d<d>[-pyr]``, ``dgl``, ``infopro``, ``predsim``, ``mlaan``),
optionally followed by ``+OPTION``s that override its memory options.
:func:`measure_rule` trains the rule's classifier on a fixed synthetic batch
through its real ``train_step`` and optimizer wrapper and measures, after
the warm-up (the steady state: optimizer state alive):

- the process's peak resident set over one iteration (``VmHWM`` after a
  reset, CPU only), meaningful in a fresh process started with
  :data:`~auglocal_det.utils.memory.RSS_ENV`, one per rule;
- the peak of live tensor bytes of one iteration
  (:class:`~auglocal_det.utils.memory.LiveTensorTracker`), with what is
  alive at that moment; on the ``meta`` device this is a dry run that
  computes nothing;
- on CUDA, ``torch.cuda.max_memory_allocated`` over the timed iterations;
- seconds per iteration, FLOPs per image (forward of network and
  auxiliary networks, and one whole training step) and parameters.
"""
import copy
import gc
import os.path as osp
import re
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.config import Config

from auglocal_det.errors import InputError, InputFileNotFoundError
from auglocal_det.registry import MODELS
from auglocal_det.structures import ClsDataSample

from .flops import count_forward_flops, count_train_step_flops
from .memory import (
    LiveTensorTracker,
    peak_rss_bytes,
    reset_peak_rss,
    rss_bytes,
)

__all__ = [
    'RULE_CONFIGS', 'OPTIONS', 'RuleRun', 'RuleSpec', 'parse_rule',
    'rule_configs', 'make_batch', 'measure_rule', 'add_ratios'
]

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
            wrapper['type'] = wrapper['type'].replace('Layerwise', '')
        elif option == 'lean':
            backbone['stem_chunk_size'] = 16
        elif option == 'cp':
            backbone['with_cp'] = True
            if augl:
                aux_head['with_cp'] = True
        elif option == 'lw' and 'Layerwise' not in wrapper['type']:
            wrapper['type'] = wrapper['type'].replace(
                'LocalOptimWrapper', 'LayerwiseLocalOptimWrapper')


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
            applied last. Defaults to None.

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
    _apply_options(model, wrapper, spec.options)
    if amp:
        if not wrapper['type'].startswith('Amp'):
            wrapper['type'] = 'Amp' + wrapper['type']
        wrapper['dtype'] = 'bfloat16'
    if cfg_options:
        merged = Config(dict(model=model, optim_wrapper=wrapper))
        merged.merge_from_dict(cfg_options)
        model = merged.model.to_dict()
        wrapper = merged.optim_wrapper.to_dict()
    return model, wrapper


def make_batch(batch_size: int, image_size: int, num_classes: int,
               seed: int = 0) -> dict:
    """A fixed synthetic batch: random uint8 RGB images and labels."""
    gen = torch.Generator().manual_seed(seed)
    return dict(
        inputs=[
            torch.randint(
                0, 256, (3, image_size, image_size),
                dtype=torch.uint8,
                generator=gen) for _ in range(batch_size)
        ],
        data_samples=[
            ClsDataSample().set_gt_label(
                int(torch.randint(0, num_classes, (1, ), generator=gen)))
            for _ in range(batch_size)
        ])


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _timing(times: List[float], batch_size: int) -> Dict[str, Any]:
    if len(times) == 1:
        q1 = median = q3 = times[0]
    else:
        q1, median, q3 = statistics.quantiles(
            times, n=4, method='inclusive')
    return dict(
        unit='seconds per iteration',
        samples=times,
        median=median,
        q1=q1,
        q3=q3,
        min=min(times),
        max=max(times),
        images_per_s=batch_size / median)


def _build_optim_wrapper(cfg: dict, model: torch.nn.Module) -> Any:
    from mmengine.optim import build_optim_wrapper
    if cfg['type'].startswith('Amp') and not torch.cuda.is_available():
        raise InputError('--amp needs a CUDA device (MMEngine\'s AMP '
                         'optimizer wrappers refuse to build without one)')
    return build_optim_wrapper(model, copy.deepcopy(cfg))


class RuleRun:
    """One rule, built, warmed up and measured, ready for timed iterations.

    :func:`measure_rule` times its iterations in a row; the benchmark
    tool's ``--interleave`` alternates the iterations of several rules, so
    that a shared machine's changing load affects every rule alike.

    Args:
        spec (RuleSpec): The rule.
        device (torch.device): ``cpu``, ``cuda`` or ``meta``.
        batch_size (int): Images per iteration.
        image_size (int): Square crop size.
        num_classes (int): Number of classes. Defaults to 1000.
        warmup (int): Iterations before measuring, at least 1. Defaults
            to 1.
        amp (bool): bfloat16 autocast (CUDA). Defaults to False.
        channels_last (bool): Model in channels_last format. Defaults to
            False.
        cfg_options (dict, optional): Overrides of the rule's config.
        measure_rss (bool): Measure the peak resident set (CPU). Defaults
            to True.
        measure_live (bool): Count the live tensors of one iteration.
            Defaults to True.
        warmup_batch_size (int, optional): Images per warm-up iteration.
            The warm-up only has to create the optimizer state, whose size
            does not depend on the batch, so a small batch saves time on a
            CPU; the training-step FLOPs are then counted at this batch
            size. Defaults to None (``batch_size``).
        trace_limit (int): Entries of the peak trace to keep. Defaults to
            15.
        seed (int): Seed of the weights and the batch. Defaults to 0.
    """

    def __init__(self,
                 spec: RuleSpec,
                 device: torch.device,
                 batch_size: int,
                 image_size: int,
                 num_classes: int = 1000,
                 warmup: int = 1,
                 amp: bool = False,
                 channels_last: bool = False,
                 cfg_options: Optional[dict] = None,
                 measure_rss: bool = True,
                 measure_live: bool = True,
                 warmup_batch_size: Optional[int] = None,
                 trace_limit: int = 15,
                 seed: int = 0) -> None:
        if warmup < 1:
            raise InputError('--warmup must be at least 1')
        self.spec = spec
        self.device = device
        self.batch_size = batch_size
        self.times: List[float] = []
        meta = device.type == 'meta'
        model_cfg, wrapper_cfg = rule_configs(spec, image_size, num_classes,
                                              amp, cfg_options)
        if meta:  # its check reads the losses' values, which do not exist
            wrapper_cfg['check_finite'] = False
        torch.manual_seed(seed)
        start = time.perf_counter()
        with torch.device('meta' if meta else 'cpu'):
            model = MODELS.build(model_cfg)
        model = model.to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        model.train()
        wrapper = _build_optim_wrapper(wrapper_cfg, model)
        build_time = time.perf_counter() - start
        data = make_batch(batch_size, image_size, num_classes, seed)
        warmup_data = data if warmup_batch_size in (None, batch_size) else \
            make_batch(warmup_batch_size, image_size, num_classes, seed)

        params = dict(
            backbone=sum(p.numel() for p in model.backbone.parameters()),
            head=sum(p.numel() for p in model.head.parameters()),
            aux=sum(p.numel() for p in model.aux_heads.parameters()))
        params['network'] = params['backbone'] + params['head']
        params['total'] = params['network'] + params['aux']
        try:
            forward = count_forward_flops(model, image_size).to_dict()
        except Exception as exc:  # noqa: BLE001
            # an operator without a meta kernel, or heads that do not
            # follow the ``loss(feat, batch)`` interface module by module
            # (MLAAN's cascades): the training-step count below applies
            forward = dict(error=f'{type(exc).__name__}: '
                           f'{str(exc).splitlines()[0] if str(exc) else ""}')

        step_flops = count_train_step_flops(model, warmup_data, wrapper)
        for _ in range(warmup - 1):
            model.train_step(warmup_data, wrapper)
        del warmup_data
        _sync(device)

        memory: Dict[str, Any] = dict(
            rss_peak_bytes=None, cuda_peak_bytes=None)
        if device.type == 'cpu' and measure_rss:
            gc.collect()
            memory['rss_before_bytes'] = rss_bytes()
            reset_peak_rss()
            model.train_step(data, wrapper)
            memory['rss_peak_bytes'] = peak_rss_bytes()
        memory.update(peak_bytes=None, peak_trace=[])
        if measure_live or meta:
            gc.collect()
            # heads resting in host memory (model.aux_head_offload) are
            # not what the compute device holds, unless the compute device
            # is the host's own memory (host='cpu' on the CPU; files are
            # mapped but not resident)
            offload = getattr(model, 'aux_head_offload', None)
            elsewhere = offload is not None and (
                offload.in_files or device.type != offload.host.type)
            tracker = LiveTensorTracker(
                model, wrapper.optimizer,
                exclude=offload.host_tensors() if elsewhere else None)
            with tracker:
                model.train_step(data, wrapper)
            report = tracker.report
            memory.update(
                peak_bytes=report.peak_bytes,
                peak_by_kind=dict(report.peak_by_kind),
                peak_activation_bytes=report.peak_activation_bytes,
                baseline_bytes=report.baseline_bytes,
                peak_trace=report.peak_trace[:trace_limit])
            del tracker, report
        if device.type == 'cuda':
            gc.collect()
            torch.cuda.reset_peak_memory_stats(device)
        self.model, self.wrapper, self.data = model, wrapper, data
        self.result = dict(
            rule=spec.name,
            config=spec.config,
            base=spec.base,
            options=list(spec.options),
            optim_wrapper=type(wrapper).__name__,
            num_modules=model.num_modules,
            num_aux=model.num_aux,
            params=params,
            flops=dict(
                unit='FLOPs per image (2 per multiply-add)',
                forward=forward,
                train_step=step_flops,
                train_step_macs=step_flops / 2),
            memory=memory,
            time=None,
            build_seconds=build_time)

    def time_iteration(self) -> float:
        """Run and time one training iteration (not on the meta device).

        Returns:
            float: Its seconds.
        """
        if self.device.type == 'meta':
            raise InputError('the meta device computes nothing to time')
        _sync(self.device)
        start = time.perf_counter()
        self.model.train_step(self.data, self.wrapper)
        _sync(self.device)
        self.times.append(time.perf_counter() - start)
        return self.times[-1]

    def finish(self) -> Dict[str, Any]:
        """The measured figures; frees the model.

        Returns:
            dict: See :func:`measure_rule`.
        """
        result = self.result
        if self.device.type == 'cuda' and self.times:
            result['memory']['cuda_peak_bytes'] = int(
                torch.cuda.max_memory_allocated(self.device))
        if self.times:
            result['time'] = _timing(self.times, self.batch_size)
        self.model = self.wrapper = self.data = None
        gc.collect()
        if self.device.type == 'cuda':
            torch.cuda.empty_cache()
        return result


def measure_rule(spec: RuleSpec,
                 device: torch.device,
                 batch_size: int,
                 image_size: int,
                 iters: int = 3,
                 **kwargs) -> Dict[str, Any]:
    """Build, train and measure one rule.

    The order: the warm-up iterations (the first also counts the
    training-step FLOPs), then on CPU one iteration for the peak resident
    set, one under the live-tensor tracker, then ``iters`` timed
    iterations. On the ``meta`` device only the tracked iteration runs
    after the warm-up (no time, no resident set).

    Args:
        spec (RuleSpec): The rule.
        device (torch.device): ``cpu``, ``cuda`` or ``meta``.
        batch_size (int): Images per iteration.
        image_size (int): Square crop size.
        iters (int): Timed iterations (0: none). Defaults to 3.
        **kwargs: The other arguments of :class:`RuleRun`.

    Returns:
        dict: ``rule``, ``config``, ``options``, ``optim_wrapper``,
        ``num_modules``, ``params``, ``flops``, ``memory`` (``peak_bytes``
        and its split, ``peak_trace``, ``rss_peak_bytes``,
        ``cuda_peak_bytes``), ``time`` (None without timed iterations).
    """
    run = RuleRun(spec, device, batch_size, image_size, **kwargs)
    for _ in range(0 if device.type == 'meta' else iters):
        run.time_iteration()
    return run.finish()


def _get(result: Dict[str, Any], *keys: str) -> Optional[float]:
    """``result[k0][k1]...``, or None where a level is missing."""
    value: Any = result
    for key in keys:
        if not isinstance(value, dict) or value.get(key) is None:
            return None
        value = value[key]
    return value


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return None if a is None or not b else a / b


def add_ratios(results: List[Dict[str, Any]]) -> Optional[str]:
    """Add ratios to the reference rule (plain BP, else the first rule).

    Adds ``ratios`` to every result: ``memory`` (live tensors), ``rss``
    (peak resident set), ``cuda_memory``, ``time`` (median),
    ``forward_flops``, ``train_flops`` and ``time_per_flop`` (time ratio /
    training-FLOPs ratio); None where a figure was not measured.

    Args:
        results (list[dict]): Results of :func:`measure_rule`.

    Returns:
        str | None: The name of the reference rule.
    """
    if not results:
        return None
    ref = next((r for r in results if r['base'] == 'bp'
                and not r['options']), results[0])
    for result in results:
        time_ratio = _ratio(
            _get(result, 'time', 'median'), _get(ref, 'time', 'median'))
        train = _ratio(
            _get(result, 'flops', 'train_step'),
            _get(ref, 'flops', 'train_step'))
        result['ratios'] = dict(
            reference=ref['rule'],
            memory=_ratio(
                _get(result, 'memory', 'peak_bytes'),
                _get(ref, 'memory', 'peak_bytes')),
            rss=_ratio(
                _get(result, 'memory', 'rss_peak_bytes'),
                _get(ref, 'memory', 'rss_peak_bytes')),
            cuda_memory=_ratio(
                _get(result, 'memory', 'cuda_peak_bytes'),
                _get(ref, 'memory', 'cuda_peak_bytes')),
            time=time_ratio,
            forward_flops=_ratio(
                _get(result, 'flops', 'forward', 'total_flops'),
                _get(ref, 'flops', 'forward', 'total_flops')),
            train_flops=train,
            time_per_flop=_ratio(time_ratio, train))
    return ref['rule']
