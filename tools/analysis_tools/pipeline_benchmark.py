"""Throughput and memory of pipelined vs. sequential local training.

Measures, on this machine's CPU, the classifier of a config file
(``--config``; ``--arch resnet34`` names ``configs/auglocal_r34_imagenet.py``
and ``--arch resnet110`` the ResNet-110 AugLocal d = 4 CIFAR-10 config;
``--aux-depth`` overrides ``model.aux_head.depth``) trained on a fixed
synthetic batch through the real ``train_step`` (SGD, Nesterov momentum),
each in fresh processes:

- (a) sequential, 1 process, 1 intra-op thread;
- (b) sequential, 1 process, 2 intra-op threads;
- (c) ``LocalPipelineParallel``, 2 processes (gloo) x 1 thread, balanced
  as ``--balance`` says;
- (d) (``--modes ... d``) two independent runs of (a) at the same time,
  timed from a common start (a barrier after the warm-up) to the later
  end: what the machine gives two single-thread workers that never wait
  for each other;
- (e) (``--modes ... e``) the two stages of (c), each trained alone on a
  fixed input (the second on the first one's output) side by side, no
  messages, timed like (d): (c) without the cost of the pipeline itself.

For each: images/s over ``--iters`` iterations after ``--warmup``, for
(c) those of the last stage with the pipeline full, as in a long run (with
``--rounds R``, the median of R runs, the cases interleaved; the ratios to
(a) are the medians of the ratios within a round), and,
in other processes of the same case, the memory per worker of one
iteration after a warm-up one: the peak of live tensor bytes
(``LiveTensorTracker``) and the process's peak resident memory (VmHWM after
writing 5 to /proc/self/clear_refs), both in steady state (optimizer state
alive). The memory processes run with MALLOC_MMAP_THRESHOLD_=65536, so
that freed tensors leave the resident set; the timed ones run without it:
with it every allocation above 64 KiB is a fresh mapping whose pages the
kernel zeroes on first touch, which about halves the speed of these small
steps and would time the kernel rather than the training. The ratios to
(a) are measured in the same run. The per-module times of (a) (forward,
loss and backward of each module, and its share of the optimizer update
by parameter count) feed the scaling model (``--scale-*``): predicted
images/s of a P-stage pipeline for P = 2, 4, 8, 16 at the target size,
next to sequential local training, the paper's (d + 1) / (L + 1) bound and
data-parallel BP; the model's prediction for (c) is printed next to the
measured value.

``--memory-only`` measures only the memory per worker of (a), (b) and
(c). ``--memory-model`` counts every stage's steady-state live tensors on
the meta device (:func:`~auglocal_det.utils.pipeline_model.stage_memory`):
at the measured size next to what (a) and (c) measured, and at the
``--scale-*`` size for P = 1 and ``--memory-stages``, the stages split by
FLOPs as the wrapper's default does.

Examples::

    python tools/analysis_tools/pipeline_benchmark.py --arch resnet34 \\
        --image-size 64 --batch-size 4 --rounds 5 --modes a b c d \\
        --out work_dirs/pipe_r34.json
    python tools/analysis_tools/pipeline_benchmark.py --arch resnet110 \\
        --image-size 32 --batch-size 8 --rounds 5 --balance time \\
        --out work_dirs/pipe_r110.json
    python tools/analysis_tools/pipeline_benchmark.py \\
        --config configs/auglocal_r101_imagenet.py --image-size 64 \\
        --batch-size 4 --modes a c --memory-only --memory-model
"""
import argparse
import json
import os
import os.path as osp
import sys
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.multiprocessing as mp

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(
    osp.abspath(__file__)))))
from auglocal_det.utils.pipeline_model import (  # noqa: E402
    balance_stages,
    benchmark_sgd,
    module_profile,
    predict_scaling,
)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
#: The config measured for each ``--arch``.
CONFIGS = {
    'resnet34': 'configs/auglocal_r34_imagenet.py',
    'resnet110': 'configs/auglocal/auglocal-d4_r110_400e_cifar10.py',
}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--arch', default='resnet34', choices=sorted(CONFIGS),
                        help='names the config of --config')
    parser.add_argument('--config', help='config file of the classifier '
                        '(its model); defaults to the config of --arch')
    parser.add_argument('--aux-depth', type=int, default=None,
                        help='override model.aux_head.depth')
    parser.add_argument('--image-size', type=int, default=64)
    parser.add_argument('--batch-size', type=int, default=8)
    parser.add_argument('--num-classes', type=int, default=None)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--iters', type=int, default=6)
    parser.add_argument('--modes', nargs='+', default=['a', 'b', 'c'],
                        choices=['a', 'b', 'c', 'd', 'e'])
    parser.add_argument('--scale-image-size', type=int, default=224)
    parser.add_argument('--scale-batch-size', type=int, default=128)
    parser.add_argument(
        '--bandwidth', type=float, nargs='+', default=[12.5, 100.],
        help='link bandwidths of the scaling model, GB/s (defaults: 100 Gb '
        'Ethernet, and an NVLink-class link)')
    parser.add_argument(
        '--balance', nargs='+', default=['auto'], metavar='B',
        help="balance of (c)'s wrapper: 'auto' (by FLOPs, the default), "
        "'time' (by per-module times the wrapper measures at start, at "
        "--batch-size) or the local modules of the two stages")
    parser.add_argument(
        '--rounds', type=int, default=1,
        help='time every case this many times, the cases interleaved; '
        'images/s is the median')
    parser.add_argument(
        '--pin-cores', action='store_true',
        help='bind every worker to its own core (worker r of (c) and (d) '
        'to core r, (a) to core 0, (b) to cores 0 and 1), as taskset '
        'would')
    parser.add_argument(
        '--memory-only', action='store_true',
        help='measure only the memory per worker of (a), (b) and (c), '
        'no timing')
    parser.add_argument(
        '--memory-model', action='store_true',
        help='count the live tensors of every stage on the meta device '
        '(stage_memory): at the measured size for (a) and (c), next to '
        'the measured figures, and at --scale-image-size and '
        '--scale-batch-size for P = 1 and --memory-stages, stages split '
        "by FLOPs (the wrapper's balance='auto')")
    parser.add_argument('--memory-stages', type=int, nargs='+',
                        default=[2, 4, 8, 16], metavar='P')
    parser.add_argument('--out', help='write the results as JSON')
    args = parser.parse_args(argv)
    if args.memory_only and not set(args.modes) & {'a', 'b', 'c'}:
        parser.error('--memory-only measures the memory of (a), (b) and '
                     '(c): give at least one of them in --modes')
    return args


def model_config(args: argparse.Namespace) -> dict:
    """``model`` of the config, with the benchmark's size and depth."""
    from mmengine.config import Config
    cfg = Config.fromfile(args.config or osp.join(ROOT, CONFIGS[args.arch]))
    model = cfg.model.to_dict()
    model.setdefault('data_preprocessor', cfg.get('data_preprocessor'))
    if model['data_preprocessor'] is None:
        model.pop('data_preprocessor')
    model['image_size'] = args.image_size
    if args.num_classes:
        model['num_classes'] = args.num_classes
    if args.aux_depth is not None:
        model['aux_head']['depth'] = args.aux_depth
    return model


def aux_depth(args: argparse.Namespace) -> int:
    """The auxiliary depth d of the measured config."""
    return int(model_config(args)['aux_head'].get('depth', 1))


def build(args: argparse.Namespace, device: str = 'cpu') -> Any:
    import auglocal_det  # noqa: F401
    from auglocal_det.registry import MODELS
    cfg = model_config(args)
    torch.manual_seed(0)
    with torch.device(device):
        return MODELS.build(cfg)


def make_batch(args: argparse.Namespace, num_classes: int) -> dict:
    """The fixed synthetic batch of every case."""
    from auglocal_det.utils.benchmark import make_batch as synthetic_batch
    return synthetic_batch(args.batch_size, args.image_size, num_classes)


def _optim_wrapper(model: Any) -> Any:
    """The optimizer of every case: SGD with Nesterov momentum."""
    from auglocal_det.engine.optim_wrappers import LocalOptimWrapper
    return LocalOptimWrapper(benchmark_sgd(model.parameters()))


def _side_by_side(worker: Any, worker_args: tuple,
                  out: str) -> Tuple[List[Dict[str, Any]], float]:
    """Run two workers at once (``worker(rank, *worker_args, barrier)``,
    each saving its ``start`` and ``end`` to ``out.format(rank=rank)``).

    Returns:
        tuple: What each saved, and the seconds from the common start to
        the later end: the one that ends first does not count its share
        of the window twice.
    """
    barrier = mp.get_context('spawn').Barrier(2)
    mp.spawn(worker, args=worker_args + (barrier, ), nprocs=2)
    runs = [
        torch.load(out.format(rank=r), weights_only=False) for r in range(2)
    ]
    return runs, max(r['end'] for r in runs) - min(r['start'] for r in runs)


def _memory(step, model, optimizer) -> Dict[str, int]:
    """Steady-state peaks of one more iteration: RSS, then live tensors
    (those of a pipeline's other stages, on the meta device, hold no
    memory and are not counted)."""
    import itertools

    from auglocal_det.process_memory import peak_rss_bytes, reset_peak_rss
    from auglocal_det.utils.memory import LiveTensorTracker
    reset_peak_rss()
    step()
    rss = peak_rss_bytes()
    released = [
        t for t in itertools.chain(model.parameters(), model.buffers())
        if t.is_meta
    ]
    tracker = LiveTensorTracker(model, optimizer, exclude=released)
    with tracker:
        step()
    return dict(peak_rss_bytes=rss, peak_live_bytes=tracker.report.peak_bytes)


def _sequential(rank: int, args: argparse.Namespace, threads: int,
                out: str, measure: str, barrier: Any = None) -> None:
    import time

    out = out.format(rank=rank)  # (d) runs two of these
    _pin(args, range(rank, rank + threads))
    torch.set_num_threads(threads)
    model = build(args)
    wrapper = _optim_wrapper(model)
    data = make_batch(args, model.num_classes)
    if measure == 'memory':
        model.train_step(data, wrapper)  # the optimizer state
        torch.save(
            _memory(lambda: model.train_step(data, wrapper), model,
                    wrapper.optimizer), out)
        return
    for _ in range(args.warmup):
        model.train_step(data, wrapper)
    if barrier is not None:  # (d): both workers start timing together
        barrier.wait()
    start = time.perf_counter()
    for _ in range(args.iters):
        model.train_step(data, wrapper)
    end = time.perf_counter()
    if barrier is not None:  # neither measures its modules alone
        barrier.wait()
    compute, update = _module_times(model, data, wrapper)
    torch.save(
        dict(images_per_s=args.iters * args.batch_size / (end - start),
             start=start, end=end, module_seconds=compute,
             update_seconds=update), out)


def _module_times(model, data,
                  wrapper) -> Tuple[List[float], List[float]]:
    """Seconds of every local step (forward, loss and backward), and its
    share of the optimizer update (what follows the last backward, split
    by parameter count)."""
    from auglocal_det.engine.profiling import time_steps
    batch_data = model.data_preprocessor(data, True)
    inputs = batch_data.pop('inputs')
    batch = model.aux_batch(inputs, batch_data['data_samples'])
    times, numels, rest = time_steps(model, wrapper, inputs, batch)
    return times, [rest * n / sum(numels) for n in numels]


def _stage_worker(rank: int, args: argparse.Namespace, sizes: List[int],
                  out: str, barrier: Any) -> None:
    """(e): one stage of (c) trained alone, on a fixed input, no messages.
    """
    import time

    _pin(args, [rank])
    torch.set_num_threads(1)
    model = build(args)
    wrapper = _optim_wrapper(model)
    batch_data = model.data_preprocessor(
        make_batch(args, model.num_classes), True)
    inputs = batch_data.pop('inputs')
    batch = model.aux_batch(inputs, batch_data['data_samples'])
    first = sum(sizes[:rank])
    modules = range(first, first + sizes[rank])
    if first:  # the input the stage would receive: module first - 1's
        with torch.no_grad():
            outputs = list(model.forward_modules(inputs, range(first)))
        inputs = outputs[-1]
        del outputs

    def train() -> None:
        model.run_iteration(wrapper, inputs=inputs, batch=batch,
                            modules=modules)

    for _ in range(args.warmup):
        train()
    barrier.wait()
    start = time.perf_counter()
    for _ in range(args.iters):
        train()
    end = time.perf_counter()
    barrier.wait()
    torch.save(dict(start=start, end=end), out.format(rank=rank))


def _pipeline_worker(rank: int, args: argparse.Namespace, port: int,
                     out_dir: str, measure: str) -> None:
    import time

    import torch.distributed as dist

    from auglocal_det.engine.model_wrappers import LocalPipelineParallel
    _pin(args, [rank])
    torch.set_num_threads(1)
    os.environ.setdefault('GLOO_SOCKET_IFNAME', 'lo')
    dist.init_process_group(
        'gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank,
        world_size=2)
    model = build(args)
    pipe = LocalPipelineParallel(
        model, num_stages=2, balance=args.stage_balance,
        profile_batch_size=args.batch_size, standalone=True)
    wrapper = _optim_wrapper(model)
    data = make_batch(args, model.num_classes) if rank == 0 else None
    result: Dict[str, Any] = dict(
        sizes=pipe.sizes, predicted_efficiency=pipe.efficiency)
    if measure == 'memory':
        pipe.train_step(data, wrapper)  # the optimizer state
        pipe.flush()
        result.update(
            _memory(lambda: pipe.train_step(data, wrapper), model,
                    wrapper.optimizer))
    else:
        # the steady state of a long run: the last stage is timed from the
        # end of its warm-up iterations to the end of --iters more, with
        # the pipeline full (no drain before: the first stage is ahead),
        # while the first stage still computes (it runs max_in_flight + 1
        # iterations more, which the last stage then finishes untimed)
        for _ in range(args.warmup):
            pipe.train_step(data, wrapper)
        start = time.perf_counter()
        for _ in range(args.iters):
            pipe.train_step(data, wrapper)
        seconds = time.perf_counter() - start
        for _ in range(pipe.max_in_flight + 1):
            pipe.train_step(data, wrapper)
        pipe.flush()
        # only the last stage's figure is the pipeline's
        result['images_per_s'] = args.iters * args.batch_size / seconds
    pipe.drain_logs()
    pipe.close()
    dist.destroy_process_group()
    torch.save(result, osp.join(out_dir, f'{measure}{rank}.pth'))


def _pin(args: argparse.Namespace, cores: Sequence[int]) -> None:
    """Bind this process (and the threads it starts) to ``cores`` when
    ``--pin-cores`` is given."""
    if args.pin_cores:
        os.sched_setaffinity(0, set(cores))


def _free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


@contextmanager
def _environment(values: Dict[str, Optional[str]]) -> Iterator[None]:
    """Set (or, for None, remove) environment variables for the processes
    started inside; malloc reads its variables at process start."""
    saved = {key: os.environ.get(key) for key in values}
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    import statistics
    import tempfile
    args = parse_args(argv)
    from auglocal_det.process_memory import RSS_ENV
    environments = dict(
        time={key: None for key in RSS_ENV}, memory=dict(RSS_ENV))
    modes = [m for m in ('a', 'b', 'c', 'd', 'e') if m in args.modes]
    if args.memory_only:  # (d) and (e) have no memory of their own
        modes = [m for m in modes if m in ('a', 'b', 'c')]
    args.stage_balance = _stage_balance(args)
    results: Dict[str, Any] = dict(args=vars(args))
    for mode in modes:
        results[mode] = dict(rounds=[])
    with tempfile.TemporaryDirectory() as tmp:

        def run(mode: str, measure: str) -> Dict[str, Any]:
            with _environment(environments[measure]):
                if mode == 'c':
                    mp.spawn(_pipeline_worker,
                             args=(args, _free_port(), tmp, measure),
                             nprocs=2)
                    ranks = [
                        torch.load(osp.join(tmp, f'{measure}{r}.pth'),
                                   weights_only=False) for r in range(2)
                    ]
                    # the last stage's iterations are the pipeline's
                    return dict(ranks[1], workers=ranks)
                if mode == 'd':  # two independent runs of (a) at once
                    out = osp.join(tmp, 'd_{rank}.pth')
                    _, seconds = _side_by_side(
                        _sequential, (args, 1, out, 'time'), out)
                    return dict(images_per_s=2 * args.iters *
                                args.batch_size / seconds)
                if mode == 'e':  # the stages of (c) side by side, alone
                    out = osp.join(tmp, 'e_{rank}.pth')
                    sizes = (results['c']['round_sizes'][-1]
                             if results.get('c', {}).get('round_sizes') else
                             _stage_sizes(args))
                    runs, seconds = _side_by_side(
                        _stage_worker, (args, sizes, out), out)
                    return dict(images_per_s=args.iters * args.batch_size /
                                seconds, sizes=sizes,
                                stage_seconds=[(r['end'] - r['start']) /
                                               args.iters for r in runs])
                out = osp.join(tmp, f'{mode}_{measure}.pth')
                mp.spawn(_sequential,
                         args=(args, 1 if mode == 'a' else 2, out, measure),
                         nprocs=1)
                return torch.load(out, weights_only=False)

        # rounds interleave the cases, so that a change in the machine's
        # load hits all of them alike
        for _ in range(0 if args.memory_only else args.rounds):
            for mode in modes:
                res = run(mode, 'time')
                results[mode]['rounds'].append(res['images_per_s'])
                if 'sizes' in res:  # a measured split may change
                    results[mode].setdefault('round_sizes', []).append(
                        res['sizes'])
                if 'stage_seconds' in res:
                    results[mode].setdefault('round_stage_seconds',
                                             []).append(res['stage_seconds'])
                for key in ('module_seconds', 'update_seconds', 'sizes',
                            'predicted_efficiency'):
                    if key in res:
                        results[mode].setdefault(key, res[key])
                _save(args, results)
        for mode in modes:
            res = results[mode]
            if not args.memory_only:
                res['images_per_s'] = statistics.median(res['rounds'])
                if 'a' in results:  # ratios within a round, the median
                    res['ratio_to_a'] = statistics.median(
                        x / y for x, y in zip(res['rounds'],
                                              results['a']['rounds']))
            if mode in ('d', 'e'):
                continue  # the memory of (a) twice, of (c)
            memory = run(mode, 'memory')
            res['workers'] = [{
                k: w[k]
                for k in ('peak_rss_bytes', 'peak_live_bytes')
            } for w in memory.get('workers', [memory])]
            if 'sizes' in memory:  # (c)'s stages, when not timed
                res.setdefault('sizes', memory['sizes'])
            _save(args, results)
    if args.memory_only:
        report_memory(args, results)
    else:
        report(args, results)
    if args.memory_model:
        results['memory_model'] = memory_model(args, results)
    _save(args, results)
    return results


def report_memory(args: argparse.Namespace,
                  results: Dict[str, Any]) -> None:
    """Print the memory per worker of ``--memory-only``."""
    print(f'{args.config or CONFIGS[args.arch]}, {args.image_size} px, '
          f'batch {args.batch_size}: steady-state memory per worker')
    for mode in ('a', 'b', 'c'):
        if mode not in results:
            continue
        res = results[mode]
        split = ''
        if 'sizes' in res:
            split = f' (stages of {", ".join(map(str, res["sizes"]))} ' \
                'modules)'
        print(f'({mode}){split}: {_worker_memory(res, ".1f")}')


def _worker_memory(res: Dict[str, Any], live_format: str = '.0f') -> str:
    """The live tensors and peak RSS of every worker of a case."""
    mib = 2.**20
    return ', '.join(
        f'live {w["peak_live_bytes"] / mib:{live_format}} MiB / RSS '
        f'{w["peak_rss_bytes"] / mib:.0f} MiB'
        for w in res.get('workers', []))


def memory_model(args: argparse.Namespace,
                 results: Dict[str, Any]) -> Dict[str, Any]:
    """Live tensors of every stage counted on the meta device
    (:func:`stage_memory`): at the measured size next to (a) and (c), and
    at the scale size for P = 1 and ``--memory-stages``."""
    from auglocal_det.engine.model_wrappers import module_costs
    from auglocal_det.utils.pipeline_model import stage_memory
    mib = 2.**20
    out: Dict[str, Any] = dict(measured_size={}, scale={})
    model = build(args, device='meta')
    for mode in ('a', 'c'):
        if mode not in results:
            continue
        sizes = results[mode].get('sizes', [model.num_modules])
        stages = stage_memory(model, sizes, args.batch_size,
                              args.image_size)
        out['measured_size'][mode] = stages
        measured = [w['peak_live_bytes'] / mib
                    for w in results[mode].get('workers', [])]
        print(f'model at {args.image_size} px, batch {args.batch_size}, '
              f'({mode}): ' + ', '.join(
                  f'{s["iteration_bytes"] / mib:.1f} MiB' for s in stages) +
              (' (measured ' + ', '.join(f'{m:.1f}' for m in measured) +
               ' MiB)' if measured else ''))
    scaled_args = argparse.Namespace(**vars(args))
    scaled_args.image_size = args.scale_image_size
    target = build(scaled_args, device='meta')
    costs = module_costs(target, args.scale_image_size)
    print(f'model at {args.scale_image_size} px, batch '
          f'{args.scale_batch_size}, stages by FLOPs:')
    sequential = None
    for num_stages in [1] + list(args.memory_stages):
        if num_stages > target.num_modules:
            continue
        sizes, _ = balance_stages(costs, num_stages)
        stages = stage_memory(target, sizes, args.scale_batch_size,
                              args.scale_image_size)
        largest = max(s['total_bytes'] for s in stages)
        sequential = sequential or largest
        out['scale'][str(num_stages)] = dict(
            sizes=sizes, stages=stages, largest_bytes=largest,
            fraction_of_sequential=largest / sequential)
        print(f'  P={num_stages:2d} {sizes}: largest stage '
              f'{largest / mib:8.1f} MiB ({largest / sequential:.2f} of '
              'sequential), smallest '
              f'{min(s["total_bytes"] for s in stages) / mib:8.1f} MiB')
    return out


def _stage_sizes(args: argparse.Namespace) -> List[int]:
    """The two stages of (c) without a run of (c): ``--balance`` as given,
    or the split by FLOPs (also for 'time', which (c) measures)."""
    if isinstance(args.stage_balance, list):
        return args.stage_balance
    from auglocal_det.engine.model_wrappers import (
        balance_stages,
        module_costs,
    )
    return balance_stages(module_costs(build(args, device='meta')), 2)[0]


def _stage_balance(args: argparse.Namespace) -> Any:
    """The ``balance`` argument of the wrapper for ``--balance``."""
    if args.balance in (['auto'], ['time']):
        return args.balance[0]
    try:
        return [int(n) for n in args.balance]
    except ValueError:
        raise SystemExit("--balance takes 'auto', 'time' or two module "
                         f'counts, got {" ".join(args.balance)}') from None


def _save(args: argparse.Namespace, results: Dict[str, Any]) -> None:
    """Write what is measured so far (``--out``)."""
    if args.out:
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            json.dump(results, f, indent=2)


def report(args: argparse.Namespace, results: Dict[str, Any]) -> None:
    name = args.config or CONFIGS[args.arch]
    print(f'AugLocal d={aux_depth(args)} ({name}), {args.image_size} px, '
          f'batch {args.batch_size}, {args.iters} timed iterations after '
          f'{args.warmup}')
    base = results.get('a', {}).get('images_per_s')
    names = dict(a='(a) sequential, 1 thread', b='(b) sequential, 2 threads',
                 d='(d) 2 independent (a) at once, summed',
                 c='(c) pipeline, 2 processes x 1 thread',
                 e="(e) (c)'s stages side by side, no messages")
    for mode in ('a', 'b', 'c', 'd', 'e'):
        if mode not in results:
            continue
        res = results[mode]
        ratio = f'{res["ratio_to_a"]:.2f}x (a)' if base else ''
        memory = _worker_memory(res)
        memory = f'per worker: {memory}' if memory else ''
        spread = (f' ({min(res["rounds"]):.2f}-{max(res["rounds"]):.2f})'
                  if len(res.get('rounds', [])) > 1 else '')
        print(f'{names[mode]:40s} {res["images_per_s"]:8.2f} img/s{spread} '
              f'{ratio:10s} {memory}')
    if 'b' in results and 'c' in results:
        import statistics
        over_b = [
            c / b for c, b in zip(results['c']['rounds'],
                                  results['b']['rounds'])
        ]
        results['c']['ratio_to_b'] = statistics.median(over_b)
        print(f'(c) / (b) within a round: median '
              f'{results["c"]["ratio_to_b"]:.2f} (rounds: '
              f'{", ".join(f"{r:.2f}" for r in over_b)})')
    if 'e' in results:
        import statistics
        per_stage = zip(*results['e']['round_stage_seconds'])
        print('(e) seconds per iteration of each stage (median): ' +
              ', '.join(f'{statistics.median(t):.3f}' for t in per_stage))
    if 'c' in results:
        sizes = results['c']['sizes']
        print(f'(c) stages: modules 0..{sizes[0] - 1} and {sizes[0]}..'
              f'{sum(sizes) - 1} (--balance {" ".join(args.balance)}, '
              f'predicted efficiency '
              f'{results["c"]["predicted_efficiency"]:.1%})')
    if 'a' not in results:
        return
    model = build(args, device='meta')
    bench = module_profile(model, args.image_size)
    scaled_args = argparse.Namespace(**vars(args))
    scaled_args.image_size = args.scale_image_size
    target = module_profile(build(scaled_args, device='meta'),
                            args.scale_image_size)
    seconds = results['a']['module_seconds']
    update = results['a']['update_seconds']
    check = predict_scaling(
        seconds, bench, bench, args.batch_size, args.batch_size, [2],
        [float('inf')], aux_depth(args), update_seconds=update)
    if 'c' in results:
        print(f'scaling model at the measured size, P=2, no link cost: '
              f'{check["pipeline"][0]["images_per_s"]:.2f} img/s '
              f'(measured {results["c"]["images_per_s"]:.2f})')
    results['scaling'] = predict_scaling(
        seconds, bench, target, args.batch_size, args.scale_batch_size,
        [2, 4, 8, 16], args.bandwidth, aux_depth(args),
        update_seconds=update)
    scaling = results['scaling']
    print(f'scaling model, {args.scale_image_size} px, batch '
          f'{args.scale_batch_size} (device speed of (a)): sequential '
          f'{scaling["sequential_images_per_s"]:.2f} img/s, BP 1 device '
          f'{scaling["bp_images_per_s"]:.2f} img/s')
    for row in scaling['pipeline']:
        print(f'  P={row["stages"]:2d} link {row["bandwidth_gb_s"]:6.1f} '
              f'GB/s: pipeline {row["images_per_s"]:8.2f} img/s '
              f'({row["speedup_vs_sequential"]:.2f}x sequential, '
              f'{row["time_vs_bp"]:.3f} of BP time, paper bound '
              f'{scaling["paper_bound"]:.3f}); data-parallel BP '
              f'{row["dp_bp_images_per_s"]:8.2f} img/s')


if __name__ == '__main__':
    main()
