"""What local learning buys and what it costs, measured side by side.

For every rule in ``--rules`` the tool builds the classifier of the
standard setting (:func:`auglocal_det.models.aux_heads.local_learning_setting`,
the same networks as ``configs/*_r34_imagenet.py``) or of a config file,
trains it for ``--warmup`` + ``--iters`` iterations on a fixed synthetic
batch (random uint8 images and labels, through the real ``train_step``, the
real data preprocessor and the real optimizer wrapper, SGD with Nesterov
momentum 0.9 and weight decay 1e-4) and reports:

- peak memory: on CUDA ``torch.cuda.max_memory_allocated`` over the timed
  iterations; on CPU the peak of live tensor bytes of one extra iteration,
  counted by :class:`~auglocal_det.utils.memory.LiveTensorTracker` (the
  same method for every rule; logical tensor bytes, not resident memory);
- the median time per iteration, its interquartile range and min/max;
- FLOPs per image: the forward cost of the network and of all auxiliary
  networks (the papers' convention, :func:`count_forward_flops`) and the
  cost of the whole training step (forward + backward, counted on the first
  warm-up iteration), both counted by ``FlopCounterMode`` (2 FLOPs per
  multiply-add; MACs = FLOPs / 2 are printed too);
- parameters of the network and of the auxiliary networks;
- ratios to the reference rule (BP): memory, time, FLOPs, and the time
  ratio divided by the training-FLOPs ratio (above 1: the rule runs less
  efficiently per FLOP than BP, e.g. because of many small kernels).

Rules are written ``BASE[+OPTION...]``:

- ``bp``, ``auglocal-d<d>`` (uniform depth), ``auglocal-d<d>-pyr``
  (pyramidal depth, ``--tau``), ``dgl``, ``infopro``, ``predsim``, or the
  path of a config file (its ``model`` and ``optim_wrapper``);
- ``+cp``: gradient checkpointing inside the backbone's blocks
  (``with_cp=True``) and, for AugLocal, inside the auxiliary blocks;
- ``+lw``: :class:`LayerwiseLocalOptimWrapper`, which updates each local
  module right after its backward and frees its gradients.

Examples::

    # the default set on a CPU (ResNet-34, 112x112, batch 4)
    python tools/analysis_tools/benchmark.py \
        --out-json work_dirs/benchmark/cpu.json \
        --out-png work_dirs/benchmark/cpu.png
    # a GPU, the training batch, bf16 autocast
    python tools/analysis_tools/benchmark.py --device cuda --amp \
        --channels-last --batch-size 128 --image-size 224 --iters 20 \
        --warmup 5
    # the memory options of AugLocal d=4
    python tools/analysis_tools/benchmark.py --rules bp auglocal-d4 \
        auglocal-d4+lw auglocal-d4+cp auglocal-d4+lw+cp
"""
import argparse
import copy
import gc
import json
import os
import os.path as osp
import platform
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.config import Config, DictAction
from mmengine.logging import MMLogger

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(
    osp.abspath(__file__)))))
import auglocal_det  # noqa: E402,F401  (registers the components)
from auglocal_det.models.aux_heads import (  # noqa: E402
    local_learning_setting,
    num_local_layers,
)
from auglocal_det.registry import MODELS  # noqa: E402
from auglocal_det.structures import ClsDataSample  # noqa: E402
from auglocal_det.utils.benchmark import MetaMemoryTracker  # noqa: E402
from auglocal_det.utils.flops import (  # noqa: E402
    count_forward_flops,
    count_train_step_flops,
)
from auglocal_det.utils.memory import LiveTensorTracker  # noqa: E402

#: The rules measured when ``--rules`` is not given.
DEFAULT_RULES = (
    ['bp', 'bp+cp'] + [f'auglocal-d{d}' for d in range(2, 7)] +
    [f'auglocal-d{d}-pyr' for d in range(2, 7)] +
    ['dgl', 'infopro', 'predsim'])
#: Rule bases other than AugLocal and config files.
SIMPLE_BASES = ('bp', 'dgl', 'infopro', 'predsim')
OPTIONS = ('cp', 'lw')
#: How the peak memory is measured on each device type.
MEMORY_METHODS = dict(
    cpu='peak live tensor bytes (LiveTensorTracker)',
    cuda='torch.cuda.max_memory_allocated',
    meta='peak live tensor bytes on the meta device (MetaMemoryTracker)')
_AUGLOCAL = re.compile(r'^auglocal-d(\d+)(-pyr)?$')


@dataclass
class RuleSpec:
    """A parsed ``--rules`` entry.

    Attributes:
        name (str): The entry as written.
        base (str): ``'bp'``, ``'auglocal'``, ``'dgl'``, ``'infopro'``,
            ``'predsim'`` or ``'config'``.
        aux_depth (int): AugLocal depth d.
        pyramid (bool): AugLocal pyramidal depth.
        config (str, optional): Config file of a ``'config'`` rule.
        options (tuple[str]): ``'cp'`` and/or ``'lw'``.
    """
    name: str
    base: str
    aux_depth: int = 4
    pyramid: bool = False
    config: Optional[str] = None
    options: Tuple[str, ...] = field(default_factory=tuple)

    @property
    def is_reference(self) -> bool:
        """bool: Plain BP, the reference of the ratios."""
        return self.base == 'bp' and not self.options


def parse_rule(name: str) -> RuleSpec:
    """Parse ``BASE[+OPTION...]`` (see the module docstring).

    Args:
        name (str): The rule, e.g. ``'auglocal-d4-pyr+lw'``.

    Returns:
        RuleSpec: The parsed rule.

    Raises:
        ValueError: For an unknown base or option.
    """
    base, *options = name.split('+')
    for option in options:
        if option not in OPTIONS:
            raise ValueError(f'unknown option {option!r} in rule {name!r}; '
                             f'options are {list(OPTIONS)}')
    options = tuple(dict.fromkeys(options))
    if base in SIMPLE_BASES:
        return RuleSpec(name, base, options=options)
    match = _AUGLOCAL.match(base)
    if match:
        return RuleSpec(
            name,
            'auglocal',
            aux_depth=int(match.group(1)),
            pyramid=bool(match.group(2)),
            options=options)
    if base.endswith('.py'):
        if not osp.isfile(base):
            raise FileNotFoundError(f'config {base!r} of rule {name!r} '
                                    'not found')
        return RuleSpec(name, 'config', config=base, options=options)
    raise ValueError(
        f'unknown rule {name!r}; expected {list(SIMPLE_BASES)}, '
        "'auglocal-d<d>', 'auglocal-d<d>-pyr' or a config file, "
        "optionally followed by '+cp' and/or '+lw'")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Memory, time and FLOPs of local-learning rules vs BP, '
        'measured side by side on synthetic batches')
    parser.add_argument(
        '--rules',
        nargs='+',
        default=list(DEFAULT_RULES),
        help='rules to measure, BASE[+cp][+lw] (see the module docstring). '
        'Defaults to BP, BP+cp, AugLocal d=2..6 uniform and pyramidal, DGL, '
        'InfoPro and PredSim')
    parser.add_argument(
        '--arch',
        default='resnet34',
        help='network of the standard settings: resnet18/34/50/101/152 '
        '(ImageNet) or resnet20/32/44/56/110 (CIFAR). Defaults to resnet34')
    parser.add_argument(
        '--device',
        default='cpu',
        help="'cpu', 'cuda' or 'cuda:N'. Defaults to cpu")
    parser.add_argument(
        '--batch-size', type=int, default=4, help='Defaults to 4')
    parser.add_argument(
        '--image-size',
        type=int,
        default=112,
        help='square crop size; also sets the model\'s image_size. '
        'Defaults to 112 (CPU budget; use 224 on a GPU)')
    parser.add_argument(
        '--iters',
        type=int,
        default=3,
        help='timed iterations per rule. Defaults to 3')
    parser.add_argument(
        '--warmup',
        type=int,
        default=1,
        help='untimed iterations before timing (at least 1: the first '
        'one counts the training-step FLOPs). Defaults to 1')
    parser.add_argument(
        '--num-classes',
        type=int,
        default=None,
        help='Defaults to 10 for the CIFAR networks, 1000 otherwise')
    parser.add_argument(
        '--tau',
        type=float,
        default=0.5,
        help='pyramid coefficient of the -pyr rules. Defaults to 0.5')
    parser.add_argument(
        '--cifar-reproduction',
        action='store_true',
        help='AugLocal with the CIFAR script\'s K - d auxiliary heads (the '
        'last d + 1 layers train end to end)')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='bfloat16 autocast with the AMP optimizer wrappers (CUDA)')
    parser.add_argument(
        '--channels-last',
        action='store_true',
        help='model in channels_last memory format (its activations '
        'follow)')
    parser.add_argument(
        '--num-threads',
        type=int,
        default=1,
        help='torch intra-op CPU threads, fixed for all rules (0 keeps '
        'torch\'s default). Defaults to 1: on a machine shared with other '
        'jobs, multi-threaded kernels wait for each other and the timings '
        'become several times slower and far noisier')
    parser.add_argument('--seed', type=int, default=0, help='Defaults to 0')
    parser.add_argument('--out-json', help='write the results here')
    parser.add_argument('--out-png', help='write a bar chart here')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override keys of every rule\'s "model" and "optim_wrapper" '
        'configs, e.g. model.backbone.norm_eval=True '
        'optim_wrapper.optimizer.lr=0.2')
    args = parser.parse_args(argv)
    if args.warmup < 1:
        parser.error('--warmup must be at least 1')
    if args.iters < 1:
        parser.error('--iters must be at least 1')
    if args.batch_size < 2:
        parser.error('--batch-size must be at least 2 (BatchNorm1d in the '
                     'auxiliary heads needs two samples)')
    return args


# ---------------------------------------------------------------- building
def _is_cifar(arch: str) -> bool:
    return arch in ('resnet20', 'resnet32', 'resnet44', 'resnet56',
                    'resnet110')


def build_cfgs(spec: RuleSpec,
               args: argparse.Namespace) -> Tuple[dict, dict]:
    """Model and optimizer-wrapper configs of one rule.

    Args:
        spec (RuleSpec): The rule.
        args (argparse.Namespace): The command-line arguments.

    Returns:
        tuple[dict, dict]: ``model`` and ``optim_wrapper`` configs.
    """
    num_classes = args.num_classes or (10 if _is_cifar(args.arch) else 1000)
    if spec.base == 'config':
        cfg = Config.fromfile(spec.config)
        model = copy.deepcopy(cfg.model.to_dict())
        optim_wrapper = copy.deepcopy(cfg.optim_wrapper.to_dict())
        model['num_classes'] = num_classes
    else:
        setting = local_learning_setting(
            spec.base,
            args.arch,
            aux_depth=spec.aux_depth,
            pyramid=spec.pyramid,
            tau=args.tau,
            cifar_reproduction=(args.cifar_reproduction
                                and spec.base == 'auglocal'))
        model = dict(
            type='LocalImageClassifier',
            backbone=setting.backbone,
            aux_head=setting.aux_head,
            num_classes=num_classes,
            split_points=setting.split_points,
            rule='bp' if spec.base == 'bp' else 'local')
        optim_wrapper = dict(
            type='LocalOptimWrapper',
            optimizer=dict(
                type='SGD',
                lr=0.1,
                momentum=0.9,
                nesterov=True,
                weight_decay=1e-4))
    model['image_size'] = args.image_size
    if 'cp' in spec.options:
        model['backbone']['with_cp'] = True
        aux_head = model.get('aux_head')
        if isinstance(aux_head, dict) and \
                aux_head.get('type') == 'AugLocalAuxHead':
            aux_head['with_cp'] = True
    # a config keeps its own wrapper unless an option asks for another
    wrapper_type = optim_wrapper.get('type', 'LocalOptimWrapper')
    if 'lw' in spec.options:
        wrapper_type = 'LayerwiseLocalOptimWrapper'
    if args.amp:
        if not wrapper_type.startswith('Amp'):
            wrapper_type = 'Amp' + wrapper_type
        optim_wrapper['dtype'] = 'bfloat16'
    optim_wrapper['type'] = wrapper_type
    if args.cfg_options:
        merged = Config(dict(model=model, optim_wrapper=optim_wrapper))
        merged.merge_from_dict(args.cfg_options)
        model = merged.model.to_dict()
        optim_wrapper = merged.optim_wrapper.to_dict()
    return model, optim_wrapper


def build_optim_wrapper(cfg: dict, model: torch.nn.Module) -> Any:
    """Build the optimizer wrapper of ``cfg`` over ``model``'s
    parameters."""
    from mmengine.optim import build_optim_wrapper as _build
    cfg = copy.deepcopy(cfg)
    if cfg['type'].startswith('Amp') and not torch.cuda.is_available():
        raise ValueError('--amp needs a CUDA device (MMEngine\'s AMP '
                         'optimizer wrappers refuse to build without one)')
    return _build(model, cfg)


def make_batch(batch_size: int, image_size: int, num_classes: int,
               seed: int) -> dict:
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


# --------------------------------------------------------------- measuring
def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _quartiles(values: List[float]) -> Tuple[float, float, float]:
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, median, q3 = statistics.quantiles(values, n=4, method='inclusive')
    return q1, median, q3


def _memory_on_cpu(model: torch.nn.Module, data: dict,
                   wrapper: Any) -> Dict[str, Any]:
    tracker = LiveTensorTracker(model, wrapper.optimizer)
    with tracker:
        model.train_step(data, wrapper)
    report = tracker.report
    return dict(
        method='peak live tensor bytes (LiveTensorTracker) of one '
        'iteration after the warm-up',
        peak_bytes=report.peak_bytes,
        peak_by_kind=dict(report.peak_by_kind),
        peak_activation_bytes=report.peak_activation_bytes,
        baseline_bytes=report.baseline_bytes)


def _memory_on_meta(model: torch.nn.Module, data: dict,
                    wrapper: Any) -> Dict[str, Any]:
    tracker = MetaMemoryTracker(model, wrapper.optimizer)
    with tracker:
        model.train_step(data, wrapper)
    return dict(
        method='peak live tensor bytes (MetaMemoryTracker, meta device) '
        'of one iteration after the warm-up',
        peak_bytes=tracker.peak_bytes,
        baseline_bytes=tracker.baseline_bytes)


def _timing(times: List[float], batch_size: int) -> Dict[str, Any]:
    q1, median, q3 = _quartiles(times)
    return dict(
        unit='seconds per iteration',
        samples=times,
        median=median,
        q1=q1,
        q3=q3,
        min=min(times),
        max=max(times),
        images_per_s=batch_size / median)


def measure_rule(spec: RuleSpec, args: argparse.Namespace,
                 device: torch.device) -> Dict[str, Any]:
    """Build, train and measure one rule.

    On the ``meta`` device nothing is computed: only memory, parameters
    and FLOPs are measured (``time`` is None).

    Args:
        spec (RuleSpec): The rule.
        args (argparse.Namespace): The command-line arguments.
        device (torch.device): Where to train.

    Returns:
        dict: The measured figures (see :func:`main`).
    """
    meta = device.type == 'meta'
    model_cfg, wrapper_cfg = build_cfgs(spec, args)
    if meta:  # its check reads the losses' values, which do not exist
        wrapper_cfg['check_finite'] = False
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    with torch.device('meta' if meta else 'cpu'):
        model = MODELS.build(model_cfg)
    model = model.to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    wrapper = build_optim_wrapper(wrapper_cfg, model)
    build_time = time.perf_counter() - start
    data = make_batch(args.batch_size, args.image_size, model.num_classes,
                      args.seed)

    backbone_params = sum(p.numel() for p in model.backbone.parameters())
    head_params = sum(p.numel() for p in model.head.parameters())
    aux_params = sum(p.numel() for p in model.aux_heads.parameters())
    try:
        forward = count_forward_flops(model, args.image_size).to_dict()
    except Exception as exc:  # noqa: BLE001
        # an operator without a meta kernel, or heads that do not follow
        # the ``loss(feat, batch)`` interface module by module (MLAAN's
        # cascades): the training-step count below still applies
        forward = dict(error=f'{type(exc).__name__}: '
                       f'{str(exc).splitlines()[0] if str(exc) else ""}')

    # warm-up; the first iteration also counts the training-step FLOPs
    step_flops = count_train_step_flops(model, data, wrapper)
    for _ in range(args.warmup - 1):
        model.train_step(data, wrapper)
    _sync(device)

    if device.type == 'cpu':
        memory = _memory_on_cpu(model, data, wrapper)
    elif meta:
        memory = _memory_on_meta(model, data, wrapper)
    else:
        gc.collect()
        torch.cuda.reset_peak_memory_stats(device)

    times = []
    for _ in range(0 if meta else args.iters):
        _sync(device)
        start = time.perf_counter()
        model.train_step(data, wrapper)
        _sync(device)
        times.append(time.perf_counter() - start)
    if device.type == 'cuda':
        memory = dict(
            method='torch.cuda.max_memory_allocated over the timed '
            'iterations',
            peak_bytes=int(torch.cuda.max_memory_allocated(device)))

    result = dict(
        rule=spec.name,
        base=spec.base,
        aux_depth=spec.aux_depth if spec.base == 'auglocal' else None,
        pyramid=spec.pyramid if spec.base == 'auglocal' else None,
        options=list(spec.options),
        optim_wrapper=type(wrapper).__name__,
        num_modules=model.num_modules,
        num_aux=model.num_aux,
        params=dict(
            backbone=backbone_params,
            head=head_params,
            network=backbone_params + head_params,
            aux=aux_params,
            total=backbone_params + head_params + aux_params),
        flops=dict(
            unit='FLOPs per image (2 per multiply-add)',
            forward=forward,
            train_step=step_flops,
            train_step_macs=step_flops / 2),
        memory=memory,
        time=_timing(times, args.batch_size) if times else None,
        build_seconds=build_time)
    del model, wrapper, data
    gc.collect()
    if device.type == 'cuda':
        torch.cuda.empty_cache()
    return result


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

    Adds ``ratios`` to every result: ``memory``, ``time`` (median),
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
            time=time_ratio,
            forward_flops=_ratio(
                _get(result, 'flops', 'forward', 'total_flops'),
                _get(ref, 'flops', 'forward', 'total_flops')),
            train_flops=train,
            time_per_flop=_ratio(time_ratio, train))
    return ref['rule']


# ---------------------------------------------------------------- reporting
def device_description(device: torch.device) -> str:
    """The device in words: the GPU name or the CPU model and cores."""
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        out = subprocess.run(['lscpu'],
                             capture_output=True,
                             text=True,
                             check=False).stdout
        for line in out.splitlines():
            if line.startswith('Model name:'):
                model = line.split(':', 1)[1].strip()
                break
    except OSError:
        pass
    return f'{model}, {os.cpu_count()} cores'


def _fmt(value: Optional[float], width: int, spec: str) -> str:
    text = '-' if value is None else format(value, spec)
    return text.rjust(width)


def format_table(results: List[Dict[str, Any]]) -> str:
    """The results as a fixed-width text table."""
    width = max([22] + [len(r['rule']) + 2 for r in results])
    head = (f'{"rule":<{width}}{"K":>3}{"params M":>9}{"aux M":>8}'
            f'{"peak MiB":>10}{"x BP":>6}{"median s":>10}{"IQR s":>14}'
            f'{"min-max s":>14}{"x BP":>6}{"fwd GMAC":>9}{"step GMAC":>10}'
            f'{"x BP":>6}{"t/FLOP":>7}')
    lines = [head, '-' * len(head)]
    for r in results:
        ratios = r.get('ratios', {})
        timing = r['time']
        if timing is None:
            spread = '-'.rjust(14) * 2
        else:
            spread = (f'{timing["q1"]:>7.3f}-{timing["q3"]:<6.3f}'
                      f'{timing["min"]:>7.3f}-{timing["max"]:<6.3f}')
        macs = _get(r, 'flops', 'forward', 'total_macs')
        lines.append(
            f'{r["rule"]:<{width}}{r["num_modules"]:>3}'
            f'{r["params"]["network"] / 1e6:>9.2f}'
            f'{r["params"]["aux"] / 1e6:>8.2f}'
            f'{r["memory"]["peak_bytes"] / 2**20:>10.1f}'
            + _fmt(ratios.get('memory'), 6, '.2f')
            + _fmt(_get(r, 'time', 'median'), 10, '.3f') + spread
            + _fmt(ratios.get('time'), 6, '.2f')
            + _fmt(None if macs is None else macs / 1e9, 9, '.3f')
            + _fmt(r['flops']['train_step_macs'] / 1e9, 10, '.3f')
            + _fmt(ratios.get('train_flops'), 6, '.2f')
            + _fmt(ratios.get('time_per_flop'), 7, '.2f'))
    return '\n'.join(lines)


def plot(results: List[Dict[str, Any]], path: str, title: str) -> None:
    """Bar chart of peak memory, median time and training FLOPs."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    names = [r['rule'] for r in results]
    xs = list(range(len(results)))
    panels = [('peak memory (MiB)', 'memory',
               [r['memory']['peak_bytes'] / 2**20 for r in results], None)]
    if all(r['time'] is not None for r in results):
        times = [r['time'] for r in results]
        panels.append(('median time per iteration (s)', 'time',
                       [t['median'] for t in times],
                       [[t['median'] - t['min'] for t in times],
                        [t['max'] - t['median'] for t in times]]))
    panels.append(('training-step GMACs per image', 'train_flops',
                   [r['flops']['train_step_macs'] / 1e9 for r in results],
                   None))
    colors = [
        'tab:gray' if r['base'] == 'bp' else 'tab:blue' for r in results
    ]
    fig, axes = plt.subplots(
        len(panels),
        1,
        figsize=(max(6., 0.6 * len(results) + 2), 3 * len(panels)),
        sharex=True,
        squeeze=False)
    axes = axes[:, 0]
    for ax, (label, key, values, err) in zip(axes, panels):
        ax.bar(xs, values, yerr=err, color=colors, capsize=3)
        ax.set_ylabel(label, fontsize=8)
        ax.grid(axis='y', alpha=0.3)
        for x, r, value in zip(xs, results, values):
            ratio = r.get('ratios', {}).get(key)
            if ratio is not None:
                ax.annotate(
                    f'{ratio:.2f}x', (x, value),
                    ha='center',
                    va='bottom',
                    fontsize=6)
    axes[-1].set_xticks(xs)
    axes[-1].set_xticklabels(names, rotation=60, ha='right', fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _print_progress(result: Dict[str, Any], start: float) -> None:
    median = _get(result, 'time', 'median')
    print(f'  {result["rule"]}: peak '
          f'{result["memory"]["peak_bytes"] / 2**20:.1f} MiB' +
          ('' if median is None else f', median {median:.3f} s') +
          f' ({time.perf_counter() - start:.0f} s elapsed)',
          flush=True)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Run the benchmark.

    Args:
        argv (Sequence[str], optional): Command-line arguments. Defaults
            to None (``sys.argv``).

    Returns:
        dict: ``meta`` (settings, device, versions), ``reference`` and
        ``results``, one dict per rule with ``params``, ``flops``
        (``forward``: the per-part forward FLOPs; ``train_step``: FLOPs of
        one training step per image), ``memory`` (``peak_bytes``), ``time``
        (seconds: ``median``, ``q1``, ``q3``, ``min``, ``max``,
        ``samples``) and ``ratios`` to the reference.
    """
    args = parse_args(argv)
    specs = [parse_rule(name) for name in args.rules]
    device = torch.device(args.device)
    if device.type not in MEMORY_METHODS:
        raise ValueError(f'--device {args.device}: expected cpu, cuda or '
                         'meta')
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise ValueError(f'--device {args.device}: CUDA is not available')
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    try:
        num_layers = num_local_layers(args.arch)
    except KeyError as exc:
        raise ValueError(f'--arch: {exc.args[0]}') from None

    meta = dict(
        arch=args.arch,
        num_local_layers=num_layers,
        device=str(device),
        device_name=device_description(device),
        batch_size=args.batch_size,
        image_size=args.image_size,
        iters=args.iters,
        warmup=args.warmup,
        amp=args.amp,
        channels_last=args.channels_last,
        num_threads=torch.get_num_threads(),
        tau=args.tau,
        cifar_reproduction=args.cifar_reproduction,
        torch=torch.__version__,
        command='python tools/analysis_tools/benchmark.py ' +
        ' '.join(argv if argv is not None else sys.argv[1:]),
        date=time.strftime('%Y-%m-%d %H:%M:%S'),
        skipped={})
    runs = (f'{args.warmup} warm-up + {args.iters} timed iterations'
            if device.type != 'meta' else
            'memory-only dry run on the meta device')
    print(f'{args.arch}, {args.image_size}x{args.image_size}, batch '
          f'{args.batch_size}, {runs}, {meta["device_name"]}, '
          f'{meta["num_threads"]} threads, amp={args.amp}, '
          f'channels_last={args.channels_last}, torch {torch.__version__}',
          flush=True)

    results = []
    start = time.perf_counter()
    # building a model logs nothing useful here
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel('WARNING')
    try:
        for spec in specs:
            try:
                results.append(measure_rule(spec, args, device))
            except (RuntimeError, NotImplementedError) as exc:
                if device.type != 'meta':
                    raise
                # e.g. InfoPro's loss turns autocast off, which has no meta
                # device
                reason = str(exc).splitlines()[0]
                meta['skipped'][spec.name] = reason
                print(f'  {spec.name}: skipped, not supported on the meta '
                      f'device ({reason})', flush=True)
                continue
            _print_progress(results[-1], start)
    finally:
        logger.setLevel(level)
    reference = add_ratios(results)
    meta['total_seconds'] = time.perf_counter() - start

    print(format_table(results))
    print('K: local modules; params M: network (backbone + classifier); '
          'aux M: auxiliary networks; peak MiB: ' +
          MEMORY_METHODS[device.type] +
          '; fwd GMAC: forward multiply-accumulates per image of network + '
          'auxiliary networks; step GMAC: one training step per image '
          '(forward + backward); t/FLOP: time ratio / step-FLOPs ratio; '
          f'x BP: ratio to {reference}')
    output = dict(meta=meta, reference=reference, results=results)
    if args.out_json:
        os.makedirs(osp.dirname(osp.abspath(args.out_json)), exist_ok=True)
        with open(args.out_json, 'w') as f:
            json.dump(output, f, indent=2)
        print(f'wrote {args.out_json}')
    if args.out_png:
        plot(results, args.out_png,
             f'{args.arch} {args.image_size}px batch {args.batch_size}, '
             f'{meta["device_name"]}')
        print(f'wrote {args.out_png}')
    return output


if __name__ == '__main__':
    from auglocal_det.utils.cli import run_with_clean_errors
    run_with_clean_errors(main)
