"""Measure the training data loader's throughput (images per second).

Builds ``train_dataloader`` of a config exactly as the Runner does (dataset,
transforms, sampler, collate) and times ``--num-batches`` batches after
``--warmup`` batches.

Examples::

    # the demo pipeline on the synthetic set, 2 workers
    python tools/analysis_tools/benchmark_loader.py \\
        configs/demo/auglocal_r34_synthetic.py --num-workers 2
    # the ImageNet pipeline (decode + RandomResizedCrop 224 + flip) on
    # ImageNet-sized synthetic JPEGs
    python tools/misc/make_synthetic_data.py imagenet data/synth_384 \\
        --image-size 384 --num-train-per-class 64 --num-val-per-class 1
    python tools/analysis_tools/benchmark_loader.py \\
        configs/auglocal_r34_imagenet.py --data-root data/synth_384 \\
        --num-workers 2 --batch-size 64
"""
import argparse
import os.path as osp
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)

from mmengine.config import Config  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

import auglocal_det  # noqa: E402,F401  (registers the components)
from auglocal_det.utils.cfg_options import check_cfg_options  # noqa: E402
from auglocal_det.utils.cli import (  # noqa: E402
    CfgOptionsAction,
    run_with_clean_errors,
)
from auglocal_det.utils.config_types import check_switched_types  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Benchmark the training data loader')
    parser.add_argument('config', help='config file')
    parser.add_argument('--data-root', help='override the data root')
    parser.add_argument('--num-workers', type=int, default=2)
    parser.add_argument('--batch-size', type=int)
    parser.add_argument('--num-batches', type=int, default=50)
    parser.add_argument('--warmup', type=int, default=5)
    parser.add_argument(
        '--cfg-options', nargs='+', action=CfgOptionsAction,
        help='override settings of the config')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        # as tools/train.py: a key that would change nothing is refused
        scope = cfg.get('default_scope', None)
        check_cfg_options(cfg, args.cfg_options, scope)
        cfg.merge_from_dict(args.cfg_options)
        check_switched_types(cfg, args.cfg_options, scope)
    loader = cfg.train_dataloader
    loader.num_workers = args.num_workers
    loader.persistent_workers = args.num_workers > 0
    if args.batch_size:
        loader.batch_size = args.batch_size
    if args.data_root:
        loader.dataset.data_root = args.data_root
        loader.dataset.pop('num_classes', None)
    init_default_scope(cfg.get('default_scope', None))
    dataloader = Runner.build_dataloader(loader, seed=0)
    total = args.warmup + args.num_batches
    images = 0
    start = None
    while True:
        for index, batch in enumerate(dataloader):
            if index == args.warmup and start is None:
                start = time.perf_counter()
                images = 0
            images += len(batch['data_samples'])
            total -= 1
            if total == 0:
                break
        if total == 0:
            break
    seconds = time.perf_counter() - start
    shape = tuple(batch['inputs'].shape)
    print(f'{images / seconds:.1f} images/s ({images} images in '
          f'{seconds:.2f} s; batch {shape} {batch["inputs"].dtype}, '
          f'{args.num_workers} workers, {len(dataloader.dataset)} images '
          f'in the data set)')


if __name__ == '__main__':
    run_with_clean_errors(main)
