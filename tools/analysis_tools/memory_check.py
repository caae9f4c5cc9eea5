"""Peak training memory of BP and AugLocal on ImageNet ResNet-34 (CPU).

Builds ResNet-34 at 224x224 twice, trained end to end (BP) and with AugLocal
(d = 4, K = 17 local layers), runs one warm-up and one measured training
iteration of each (SGD with momentum) and prints the peak of live tensor
bytes in the measured iteration, split into parameters + gradients +
optimizer state and activations, and the AugLocal / BP ratios. Live bytes
are counted by :class:`auglocal_det.utils.memory.LiveTensorTracker`, the
same way for both rules.

The counts are logical tensor bytes (no allocator caching), so they
compare the rules but are not the process's resident memory.

Example::

    python tools/analysis_tools/memory_check.py 8
"""
import argparse
import os.path as osp
import sys
import time
from typing import Dict, Optional, Sequence

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(
    osp.abspath(__file__)))))
import auglocal_det  # noqa: E402,F401  (registers the components)
from auglocal_det.engine.optim_wrappers import LocalOptimWrapper  # noqa: E402
from auglocal_det.registry import MODELS  # noqa: E402
from auglocal_det.structures import ClsDataSample  # noqa: E402
from auglocal_det.utils.memory import (  # noqa: E402
    LiveTensorTracker,
    MemoryReport,
    format_bytes,
)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Peak live tensor memory of one training iteration, '
        'BP vs AugLocal, ImageNet ResNet-34 on CPU')
    parser.add_argument(
        'batch_size', nargs='?', type=int, default=8,
        help='images per iteration. Defaults to 8')
    parser.add_argument(
        '--aux-depth', type=int, default=4,
        help='AugLocal auxiliary depth d. Defaults to 4')
    parser.add_argument(
        '--image-size', type=int, default=224,
        help='training crop size. Defaults to 224')
    parser.add_argument(
        '--num-classes', type=int, default=1000,
        help='number of classes. Defaults to 1000')
    parser.add_argument(
        '--threads', type=int, default=1,
        help='intra-op CPU threads (0: torch\'s default). The byte counts '
        'do not depend on it. Defaults to 1, which avoids oversubscribing '
        'a shared machine')
    return parser.parse_args(argv)


def build(rule: str, args: argparse.Namespace) -> torch.nn.Module:
    aux_head = (None if rule == 'bp' else dict(
        type='AugLocalAuxHead', depth=args.aux_depth))
    torch.manual_seed(0)
    return MODELS.build(
        dict(
            type='LocalImageClassifier',
            backbone=dict(type='LocalResNet', depth=34),
            aux_head=aux_head,
            num_classes=args.num_classes,
            image_size=args.image_size,
            rule='bp' if rule == 'bp' else 'local'))


def make_batch(args: argparse.Namespace) -> dict:
    gen = torch.Generator().manual_seed(0)
    size = args.image_size
    return dict(
        inputs=[
            torch.randint(0, 256, (3, size, size), dtype=torch.uint8,
                          generator=gen) for _ in range(args.batch_size)
        ],
        data_samples=[
            ClsDataSample().set_gt_label(i % args.num_classes)
            for i in range(args.batch_size)
        ])


def measure(rule: str, args: argparse.Namespace) -> Dict[str, object]:
    model = build(rule, args).train()
    optimizer = torch.optim.SGD(
        model.parameters(), lr=0.1, momentum=0.9, nesterov=True,
        weight_decay=1e-4)
    wrapper = LocalOptimWrapper(optimizer)
    data = make_batch(args)
    start = time.perf_counter()
    model.train_step(data, wrapper)  # warm-up: creates optimizer state
    warmup = time.perf_counter() - start
    tracker = LiveTensorTracker(model, optimizer)
    start = time.perf_counter()
    with tracker:
        model.train_step(data, wrapper)
    measured = time.perf_counter() - start
    return dict(
        report=tracker.report,
        num_modules=model.num_modules,
        num_params=sum(p.numel() for p in model.parameters()),
        seconds=(warmup, measured))


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f'ResNet-34, {args.image_size}x{args.image_size}, batch '
          f'{args.batch_size}, {args.num_classes} classes, SGD (momentum '
          f'0.9), torch {torch.__version__}, {torch.get_num_threads()} CPU '
          'threads')
    rules = {'BP': 'bp', f'AugLocal d={args.aux_depth}': 'auglocal'}
    results = {}
    for name, rule in rules.items():
        results[name] = measure(rule, args)
        print(f'{name}: measured in {results[name]["seconds"][1]:.1f} s '
              f'(warm-up {results[name]["seconds"][0]:.1f} s)', flush=True)

    header = (f'{"rule":<14}{"K":>3}{"params":>13}{"peak total":>13}'
              f'{"params+grads+optim":>20}{"activations":>13}'
              f'{"peak activ.":>13}')
    print(header)
    print('-' * len(header))
    for name, result in results.items():
        report: MemoryReport = result['report']
        print(f'{name:<14}{result["num_modules"]:>3}'
              f'{result["num_params"] / 1e6:>12.2f}M'
              f'{format_bytes(report.peak_bytes):>13}'
              f'{format_bytes(report.peak_state_bytes):>20}'
              f'{format_bytes(report.peak_by_kind["other"]):>13}'
              f'{format_bytes(report.peak_activation_bytes):>13}')
    bp, auglocal = (results[name]['report'] for name in rules)
    print('columns: peak total = largest live tensor bytes in the measured '
          'iteration; params+grads+optim and activations = its split at '
          'that moment; peak activ. = largest live activation bytes')
    print(f'AugLocal / BP: peak total '
          f'{auglocal.peak_bytes / bp.peak_bytes:.3f}, activations at peak '
          f'{auglocal.peak_by_kind["other"] / bp.peak_by_kind["other"]:.3f}'
          f', peak activations '
          f'{auglocal.peak_activation_bytes / bp.peak_activation_bytes:.3f}')


if __name__ == '__main__':
    main()
