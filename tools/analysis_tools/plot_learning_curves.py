"""Plot the training loss of the network's output against epoch.

One line per work dir, log y-scale (the learning curves of the AugLocal
paper's appendix, Figure 1). Writes the PNG and, next to it, a JSON file
with the per-epoch numbers.

Example::

    python tools/analysis_tools/plot_learning_curves.py \
        work_dirs/bp_r110_400e_cifar10 \
        work_dirs/auglocal-d3_r110_400e_cifar10 \
        --out work_dirs/learning_curves.png
"""
import argparse
import os.path as osp
import sys
from typing import Optional, Sequence

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(
    osp.abspath(__file__)))))
from auglocal_det.analysis import learning_curves  # noqa: E402
from auglocal_det.utils.cli import run_with_clean_errors  # noqa: E402


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('work_dirs', nargs='+', help='training work dirs')
    parser.add_argument(
        '--out', default='learning_curves.png', help='output PNG')
    parser.add_argument(
        '--names', nargs='+', help='labels of the lines, one per work dir')
    parser.add_argument(
        '--key',
        help='logged loss to plot (default: the network output\'s, loss_lNN '
        'of the last local module or loss_cls)')
    parser.add_argument(
        '--points-per-epoch', type=int, default=1,
        help='points per epoch: the logged iterations of each epoch split '
        'into this many consecutive parts, one mean each (default: 1, the '
        'mean of the whole epoch)')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    curves = learning_curves(args.work_dirs, args.out, args.names, args.key,
                             args.points_per_epoch)
    for curve in curves:
        print(f'{curve["name"]}: {curve["key"]}, {len(curve["epochs"])} '
              f'points, last {curve["loss"][-1]:.4g}')
    print(f'wrote {args.out} and {args.out[:-4]}.json')


if __name__ == '__main__':
    run_with_clean_errors(main)
