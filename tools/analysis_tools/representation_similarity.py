"""Linear CKA between every local layer of local-rule models and a BP model.

Each work dir's latest checkpoint (``last_checkpoint``) is loaded, with
the package's safe loader, into the model of its dumped config; the first
``--num-images`` images of the BP config's validation set go through the
local layers (stem and blocks) of every model, and each layer is compared
with the same layer of the BP model (the similarity analysis of the
AugLocal paper). Writes the PNG and, next to it, a JSON file with the
numbers.

Example::

    python tools/analysis_tools/representation_similarity.py \
        work_dirs/auglocal-d3_r110_400e_cifar10 \
        work_dirs/dgl_r110_400e_cifar10 \
        --bp work_dirs/bp_r110_400e_cifar10 --out work_dirs/cka.png
"""
import argparse
import os.path as osp
import sys
from typing import Optional, Sequence

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(
    osp.abspath(__file__)))))
from auglocal_det.analysis import representation_similarity  # noqa: E402
from auglocal_det.utils.cli import (  # noqa: E402
    add_trust_checkpoint_option,
    run_with_clean_errors,
)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        'work_dirs', nargs='+', help='work dirs of local-rule runs')
    parser.add_argument(
        '--bp', required=True, help='work dir of the BP run (reference)')
    parser.add_argument('--out', default='cka.png', help='output PNG')
    parser.add_argument(
        '--num-images', type=int, default=512,
        help='validation images compared (the first ones of the set)')
    parser.add_argument(
        '--names', nargs='+', help='labels of the lines, one per work dir')
    parser.add_argument(
        '--data-root', help='validation data root (default: the config\'s)')
    parser.add_argument(
        '--batch-size', type=int, default=128, help='images per forward')
    parser.add_argument('--device', default='cpu', help='e.g. cpu, cuda')
    add_trust_checkpoint_option(parser, 'the work dirs\' checkpoints')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    numbers = representation_similarity(
        args.work_dirs, args.bp, args.out, num_images=args.num_images,
        names=args.names, data_root=args.data_root,
        batch_size=args.batch_size, device=args.device,
        trust_checkpoint=args.trust_checkpoint)
    for name, values in numbers['cka'].items():
        print(f'{name}: CKA first layer {values[0]:.3f}, last layer '
              f'{values[-1]:.3f} ({numbers["num_images"]} images)')
    print(f'wrote {args.out} and {args.out[:-4]}.json')


if __name__ == '__main__':
    run_with_clean_errors(main)
