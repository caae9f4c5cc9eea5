"""What local learning buys and what it costs, measured side by side.

Each rule is a config file (``configs/*_r34_imagenet.py`` through the
shorthands ``bp``, ``auglocal-d<d>``, ``auglocal-d<d>-pyr``, ``dgl``,
``infopro``, ``predsim``, ``mlaan``, or any path), optionally followed by
memory options: ``+plain`` (every memory option of the config off),
``+lean`` (memory-lean stem), ``+cp`` (gradient checkpointing in the
backbone and AugLocal's auxiliary blocks), ``+lw`` (per-layer optimizer
step). For every rule the tool trains the config's classifier on a fixed
synthetic batch through its real ``train_step`` and optimizer wrapper and
reports, in the steady state after ``--warmup`` iterations
(:func:`auglocal_det.utils.benchmark.measure_rule`):

- the peak of live tensor bytes of one iteration and what is alive at that
  moment (module, operator, shape); ``--device meta`` counts it without
  computing anything, in seconds even at batch 128 and 224 x 224;
- on CPU, the process's peak resident set over one iteration (``VmHWM``
  after ``/proc/self/clear_refs``), each rule in its own process started
  with ``MALLOC_MMAP_THRESHOLD_=65536``;
- on CUDA, ``torch.cuda.max_memory_allocated`` over the timed iterations;
- seconds per iteration, FLOPs per image and parameters, with ratios to
  BP.

Examples::

    # memory of AugLocal d = 4 before and after its memory options, at the
    # training batch, as a dry run
    python tools/analysis_tools/benchmark.py --device meta \
        --batch-size 128 --image-size 224 \
        --rules bp auglocal-d4+plain auglocal-d4
    # the same on the CPU, with the processes' resident sets
    python tools/analysis_tools/benchmark.py --batch-size 128 \
        --image-size 224 --iters 0 --num-threads 2 \
        --rules bp auglocal-d4+plain auglocal-d4
    # a GPU, bf16 autocast
    python tools/analysis_tools/benchmark.py --device cuda --amp \
        --channels-last --batch-size 128 --image-size 224 --iters 20 \
        --warmup 5
"""
import argparse
import json
import os
import os.path as osp
import platform
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence

import torch
from mmengine.logging import MMLogger

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)
import auglocal_det  # noqa: E402,F401  (registers the components)
from auglocal_det.errors import InputError  # noqa: E402
from auglocal_det.process_memory import RSS_ENV  # noqa: E402
from auglocal_det.utils.benchmark import (  # noqa: E402
    OPTIONS,
    RuleRun,
    add_ratios,
    measure_rule,
    parse_rule,
)
from auglocal_det.utils.cli import CfgOptionsAction  # noqa: E402

#: The rules measured when ``--rules`` is not given.
DEFAULT_RULES = (
    ['bp', 'bp+cp'] + [f'auglocal-d{d}' for d in range(2, 7)] +
    [f'auglocal-d{d}-pyr' for d in range(2, 7)] +
    ['dgl', 'infopro', 'predsim'])
#: How the peak memory is measured on each device type.
MEMORY_METHODS = dict(
    cpu='peak live tensor bytes (LiveTensorTracker); RSS: peak resident '
    'set of the rule\'s process over one iteration',
    cuda='torch.cuda.max_memory_allocated (cuda MiB); live tensor bytes',
    meta='peak live tensor bytes on the meta device (LiveTensorTracker)')


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Memory, time and FLOPs of local-learning rules vs BP, '
        'measured side by side on synthetic batches')
    parser.add_argument(
        '--rules',
        nargs='+',
        default=list(DEFAULT_RULES),
        help='rules to measure: a shorthand or config file, then '
        f'+OPTION ({", ".join(OPTIONS)}). Defaults to BP, BP+cp, AugLocal '
        'd=2..6 uniform and pyramidal, DGL, InfoPro and PredSim')
    parser.add_argument(
        '--config-dir',
        default=osp.join(ROOT, 'configs'),
        help='folder of the shorthands\' config files. Defaults to the '
        'repository\'s configs/')
    parser.add_argument(
        '--device',
        default='cpu',
        help="'cpu', 'cuda', 'cuda:N' or 'meta'. Defaults to cpu")
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
        help='timed iterations per rule (0: memory only). Defaults to 3')
    parser.add_argument(
        '--warmup',
        type=int,
        default=1,
        help='iterations before measuring (at least 1: the first one '
        'counts the training-step FLOPs and creates the optimizer state). '
        'Defaults to 1')
    parser.add_argument(
        '--warmup-batch-size',
        type=int,
        default=None,
        help='images per warm-up iteration: the warm-up only creates the '
        'optimizer state, so a small one saves time on a CPU (the '
        'training-step FLOPs are then counted at this size). Defaults to '
        '--batch-size')
    parser.add_argument(
        '--no-live',
        action='store_true',
        help='skip the live-tensor count on CPU and CUDA (one iteration '
        'less; the meta device gives the same count)')
    parser.add_argument(
        '--num-classes', type=int, default=1000, help='Defaults to 1000')
    parser.add_argument(
        '--tau',
        type=float,
        default=0.5,
        help='pyramid coefficient of the -pyr rules. Defaults to 0.5')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='bfloat16 autocast with the AMP optimizer wrappers (CUDA)')
    parser.add_argument(
        '--channels-last',
        action='store_true',
        help='model in channels_last memory format')
    parser.add_argument(
        '--num-threads',
        type=int,
        default=1,
        help='torch intra-op CPU threads, fixed for all rules (0 keeps '
        'torch\'s default). Defaults to 1: on a machine shared with other '
        'jobs, multi-threaded kernels wait for each other and the timings '
        'become several times slower and far noisier')
    parser.add_argument(
        '--in-process',
        action='store_true',
        help='measure every rule in this process (faster to start; no '
        'resident-set figures, since one process holds all rules). Always '
        'so on the meta and CUDA devices')
    parser.add_argument(
        '--interleave',
        action='store_true',
        help='build every rule first, then time one iteration of each in '
        'turn, --iters rounds (implies --in-process): on a machine shared '
        'with other jobs the load then changes the times of all rules '
        'alike, so their ratios mean something')
    parser.add_argument('--seed', type=int, default=0, help='Defaults to 0')
    parser.add_argument('--out-json', help='write the results here')
    parser.add_argument('--out-png', help='write a bar chart here')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=CfgOptionsAction,
        help='override keys of every rule\'s "model" and "optim_wrapper" '
        'configs, e.g. model.backbone.norm_eval=True '
        'optim_wrapper.optimizer.lr=0.2; each key must lead somewhere in '
        'every rule measured')
    parser.add_argument('--worker-out', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.warmup < 1:
        parser.error('--warmup must be at least 1')
    if args.iters < 0:
        parser.error('--iters must be at least 0')
    if args.warmup_batch_size is not None and args.warmup_batch_size < 2:
        parser.error('--warmup-batch-size must be at least 2')
    if args.batch_size < 2:
        parser.error('--batch-size must be at least 2 (BatchNorm in the '
                     'auxiliary heads needs two samples)')
    return args


def _run_kwargs(args: argparse.Namespace, measure_rss: bool) -> dict:
    return dict(
        batch_size=args.batch_size,
        image_size=args.image_size,
        num_classes=args.num_classes,
        warmup=args.warmup,
        amp=args.amp,
        channels_last=args.channels_last,
        cfg_options=args.cfg_options,
        measure_rss=measure_rss,
        measure_live=not args.no_live,
        warmup_batch_size=args.warmup_batch_size,
        seed=args.seed)


def _measure_here(name: str, args: argparse.Namespace,
                  device: torch.device, measure_rss: bool) -> Dict[str, Any]:
    spec = parse_rule(name, args.config_dir, tau=args.tau)
    return measure_rule(
        spec, device, iters=args.iters, **_run_kwargs(args, measure_rss))


def _measure_interleaved(args: argparse.Namespace,
                         device: torch.device) -> List[Dict[str, Any]]:
    """Build every rule, then time round after round of one iteration
    per rule."""
    runs = []
    for name in args.rules:
        runs.append(
            RuleRun(
                parse_rule(name, args.config_dir, tau=args.tau), device,
                **_run_kwargs(args, False)))
        print(f'  {name}: built and measured', flush=True)
    for round_index in range(args.iters):
        for run in runs:
            run.time_iteration()
        print(f'  round {round_index + 1}/{args.iters}: ' + ', '.join(
            f'{run.spec.name} {run.times[-1]:.3f} s' for run in runs),
              flush=True)
    return [run.finish() for run in runs]


def _measure_in_subprocess(name: str, argv: List[str]) -> Dict[str, Any]:
    """Measure one rule in a fresh process whose resident set follows its
    tensors (:data:`RSS_ENV`)."""
    env = dict(os.environ)
    for key, value in RSS_ENV.items():
        env.setdefault(key, value)
    with tempfile.TemporaryDirectory() as tmp:
        out = osp.join(tmp, 'result.json')
        cmd = [sys.executable, osp.abspath(__file__)] + argv + [
            '--rules', name, '--worker-out', out
        ]
        proc = subprocess.run(cmd, env=env, check=False)
        if proc.returncode != 0 or not osp.isfile(out):
            raise RuntimeError(f'measuring rule {name!r} failed in its '
                               f'process (exit status {proc.returncode})')
        with open(out) as f:
            return json.load(f)


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


def _mib(value: Optional[float]) -> Optional[float]:
    return None if value is None else value / 2**20


def format_table(results: List[Dict[str, Any]]) -> str:
    """The results as a fixed-width text table."""
    width = max([22] + [len(r['rule']) + 2 for r in results])
    head = (f'{"rule":<{width}}{"K":>3}{"params M":>9}{"aux M":>8}'
            f'{"live MiB":>10}{"x BP":>6}{"RSS MiB":>9}{"x BP":>6}'
            f'{"cuda MiB":>9}{"median s":>10}{"IQR s":>14}'
            f'{"min-max s":>14}{"x BP":>6}{"fwd GMAC":>9}{"step GMAC":>10}'
            f'{"x BP":>6}{"t/FLOP":>7}')
    lines = [head, '-' * len(head)]
    for r in results:
        ratios = r.get('ratios', {})
        memory = r['memory']
        timing = r['time']
        if timing is None:
            spread = '-'.rjust(14) * 2
        else:
            spread = (f'{timing["q1"]:>7.3f}-{timing["q3"]:<6.3f}'
                      f'{timing["min"]:>7.3f}-{timing["max"]:<6.3f}')
        macs = r['flops']['forward'].get('total_macs')
        lines.append(
            f'{r["rule"]:<{width}}{r["num_modules"]:>3}'
            f'{r["params"]["network"] / 1e6:>9.2f}'
            f'{r["params"]["aux"] / 1e6:>8.2f}'
            + _fmt(_mib(memory['peak_bytes']), 10, '.1f')
            + _fmt(ratios.get('memory'), 6, '.2f')
            + _fmt(_mib(memory.get('rss_peak_bytes')), 9, '.1f')
            + _fmt(ratios.get('rss'), 6, '.2f')
            + _fmt(_mib(memory.get('cuda_peak_bytes')), 9, '.1f')
            + _fmt(None if timing is None else timing['median'], 10, '.3f')
            + spread + _fmt(ratios.get('time'), 6, '.2f')
            + _fmt(None if macs is None else macs / 1e9, 9, '.3f')
            + _fmt(r['flops']['train_step_macs'] / 1e9, 10, '.3f')
            + _fmt(ratios.get('train_flops'), 6, '.2f')
            + _fmt(ratios.get('time_per_flop'), 7, '.2f'))
    return '\n'.join(lines)


def format_trace(result: Dict[str, Any]) -> str:
    """What was alive at the live-tensor peak of one rule."""
    if result['memory']['peak_bytes'] is None:
        return f'{result["rule"]}: live tensors not counted'
    lines = [f'{result["rule"]}: alive at the peak of '
             f'{result["memory"]["peak_bytes"] / 2**20:.1f} MiB']
    for entry in result['memory']['peak_trace']:
        shape = 'x'.join(str(n) for n in entry['shape'])
        lines.append(f'  {entry["bytes"] / 2**20:9.1f} MiB {entry["count"]:>4}'
                     f' x {entry["kind"]:<6}{shape:>18}  {entry["op"]:<34}'
                     f'{entry["module"]}')
    return '\n'.join(lines)


def plot(results: List[Dict[str, Any]], path: str, title: str) -> None:
    """Bar chart of peak memory, median time and training FLOPs."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    names = [r['rule'] for r in results]
    xs = list(range(len(results)))
    panels = [('peak live tensors (MiB)', 'memory',
               [(r['memory']['peak_bytes'] or 0) / 2**20 for r in results],
               None)]
    if all(r['memory'].get('rss_peak_bytes') for r in results):
        panels.append(('peak RSS (MiB)', 'rss', [
            r['memory']['rss_peak_bytes'] / 2**20 for r in results
        ], None))
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


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Run the benchmark.

    Args:
        argv (Sequence[str], optional): Command-line arguments. Defaults
            to None (``sys.argv``).

    Returns:
        dict: ``meta`` (settings, device, versions), ``reference`` and
        ``results``, one dict per rule (see
        :func:`auglocal_det.utils.benchmark.measure_rule`) with ``ratios``
        to the reference.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type not in MEMORY_METHODS:
        raise InputError(f'--device {args.device}: expected cpu, cuda or '
                         'meta')
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise InputError(f'--device {args.device}: CUDA is not available')
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    for name in args.rules:  # fail early on a misspelt rule
        parse_rule(name, args.config_dir, tau=args.tau)
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel('WARNING')  # building a model logs nothing useful here

    if args.worker_out:
        try:
            result = _measure_here(args.rules[0], args, device, True)
        finally:
            logger.setLevel(level)
        with open(args.worker_out, 'w') as f:
            json.dump(result, f)
        return result

    in_process = args.in_process or args.interleave or device.type != 'cpu'
    meta = dict(
        device=str(device),
        device_name=device_description(device),
        batch_size=args.batch_size,
        image_size=args.image_size,
        iters=args.iters,
        warmup=args.warmup,
        amp=args.amp,
        channels_last=args.channels_last,
        num_threads=torch.get_num_threads(),
        process_per_rule=not in_process,
        interleaved=args.interleave,
        rss_env=None if in_process else RSS_ENV,
        tau=args.tau,
        torch=torch.__version__,
        command='python tools/analysis_tools/benchmark.py ' +
        ' '.join(argv),
        date=time.strftime('%Y-%m-%d %H:%M:%S'),
        skipped={})
    runs = ('memory-only dry run on the meta device' if device.type ==
            'meta' else f'{args.warmup} warm-up + {args.iters} timed '
            'iterations')
    print(f'{args.image_size}x{args.image_size}, batch {args.batch_size}, '
          f'{runs}, {meta["device_name"]}, {meta["num_threads"]} threads, '
          f'amp={args.amp}, channels_last={args.channels_last}, '
          f'{"one process" if in_process else "a process per rule"}, '
          f'torch {torch.__version__}', flush=True)

    results = []
    start = time.perf_counter()
    try:
        if args.interleave and device.type != 'meta':
            results = _measure_interleaved(args, device)
        for name in ([] if results else args.rules):
            try:
                if in_process:
                    result = _measure_here(name, args, device, False)
                else:
                    result = _measure_in_subprocess(name, argv)
            except (RuntimeError, NotImplementedError) as exc:
                if device.type != 'meta':
                    raise
                # e.g. InfoPro's loss turns autocast off, which has no meta
                # device
                reason = str(exc).splitlines()[0]
                meta['skipped'][name] = reason
                print(f'  {name}: skipped, not supported on the meta '
                      f'device ({reason})', flush=True)
                continue
            results.append(result)
            rss = result['memory'].get('rss_peak_bytes')
            live = result['memory']['peak_bytes']
            print(f'  {name}: live peak '
                  + ('-' if live is None else f'{live / 2**20:.1f} MiB') +
                  ('' if rss is None else f', RSS peak {rss / 2**20:.1f} '
                   'MiB') + f' ({time.perf_counter() - start:.0f} s '
                  'elapsed)', flush=True)
    finally:
        logger.setLevel(level)
    reference = add_ratios(results)
    meta['total_seconds'] = time.perf_counter() - start

    print(format_table(results))
    print('K: local modules; params M: network (backbone + classifier); '
          'aux M: auxiliary networks; live MiB / RSS MiB / cuda MiB: ' +
          MEMORY_METHODS[device.type] + '; fwd GMAC: forward multiply-'
          'accumulates per image of network + auxiliary networks; step '
          'GMAC: one training step per image (forward + backward); '
          f't/FLOP: time ratio / step-FLOPs ratio; x BP: ratio to '
          f'{reference}')
    for result in results:
        print(format_trace(result))
    output = dict(meta=meta, reference=reference, results=results)
    if args.out_json:
        os.makedirs(osp.dirname(osp.abspath(args.out_json)), exist_ok=True)
        with open(args.out_json, 'w') as f:
            json.dump(output, f, indent=2)
        print(f'wrote {args.out_json}')
    if args.out_png:
        plot(results, args.out_png,
             f'{args.image_size}px batch {args.batch_size}, '
             f'{meta["device_name"]}')
        print(f'wrote {args.out_png}')
    return output


if __name__ == '__main__':
    from auglocal_det.utils.cli import run_with_clean_errors
    run_with_clean_errors(main)
