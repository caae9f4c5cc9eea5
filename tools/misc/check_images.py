"""Decode every image of an ImageNet-style data set before a long run.

A corrupt or truncated JPEG otherwise stops training only when its batch
is loaded, possibly hours in. This tool builds the splits with the same
dataset class as training (so the class list and layout are checked too),
decodes every image with the training decoder in parallel processes and
lists the files that fail, with the decoder's reason. An image whose
header announces more pixels than training accepts (a decompression bomb)
fails without being decoded. Exits with status 1 if any image fails.
16-bit images are listed too: training scales them to 8 bits, which is
right for images stored with 16 bits per channel but worth knowing about
(they do not count as failures).

Examples::

    # the train and val splits of a pretraining config
    python tools/misc/check_images.py configs/auglocal_r34_imagenet.py \\
        --data-root data/imagenet --workers 16
    # one split, the first 1000 images only
    python tools/misc/check_images.py configs/auglocal_r34_imagenet.py \\
        --splits val --limit 1000
"""
import argparse
import functools
import os
import os.path as osp
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Dict, List, Optional, Sequence, Tuple

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)

from mmengine.config import Config  # noqa: E402

import auglocal_det.datasets  # noqa: E402,F401  (registers ImageNet)
from auglocal_det.datasets.transforms.loading import (  # noqa: E402
    decode_image_with_depth,
)
from auglocal_det.errors import InputError  # noqa: E402
from auglocal_det.registry import DATASETS  # noqa: E402
from auglocal_det.utils.cli import load_config  # noqa: E402

SPLITS = ('train', 'val', 'test')


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Decode every image of the data sets of a pretraining '
        'config and list the ones that fail')
    parser.add_argument('config', help='pretraining config')
    parser.add_argument(
        '--data-root',
        help='override data_root of the dataloaders (the folder with '
        'train/ and val/)')
    parser.add_argument(
        '--splits',
        nargs='+',
        choices=SPLITS,
        default=['train', 'val'],
        help='dataloaders to check (default: train val)')
    parser.add_argument(
        '--workers',
        type=int,
        default=os.cpu_count() or 1,
        help='decoding processes (default: all cores)')
    parser.add_argument(
        '--limit',
        type=int,
        help='check only the first N images of each split')
    parser.add_argument(
        '--max-pixels',
        type=int,
        help='largest width x height accepted, as LoadImageTensor\'s '
        'max_pixels (default: PIL.Image.MAX_IMAGE_PIXELS)')
    return parser.parse_args(argv)


def image_paths(cfg: Config, split: str,
                data_root: Optional[str] = None) -> List[str]:
    """The image files of one dataloader of ``cfg``, in dataset order.

    The dataset is built as for training, without its pipeline, so a bad
    layout or class list raises the dataset's own error.
    """
    loader = cfg.get(f'{split}_dataloader')
    if not loader:
        raise InputError(f'{cfg.filename}: no {split}_dataloader')
    dataset_cfg = dict(loader['dataset'])
    dataset_cfg['pipeline'] = []
    if data_root is not None:
        dataset_cfg['data_root'] = data_root
    dataset = DATASETS.build(dataset_cfg)
    return [dataset.get_data_info(i)['img_path'] for i in range(len(dataset))]


def check_chunk(paths: Sequence[str],
                max_pixels: Optional[int] = None
                ) -> Tuple[List[Tuple[str, str]], List[str]]:
    """Read and decode ``paths``; return ``(path, reason)`` of failures and
    the paths of 16-bit images."""
    bad, sixteen = [], []
    for path in paths:
        try:
            with open(path, 'rb') as f:
                _, bits = decode_image_with_depth(f.read(), path, max_pixels)
        except OSError as exc:
            bad.append((path, str(exc)))
        else:
            if bits == 16:
                sixteen.append(path)
    return bad, sixteen


def check_paths(paths: Sequence[str],
                workers: int = 1,
                chunk: int = 256,
                sixteen_bit: Optional[List[str]] = None,
                max_pixels: Optional[int] = None
                ) -> List[Tuple[str, str]]:
    """Decode all ``paths`` with ``workers`` processes; list the failures.

    The paths of 16-bit images are appended to ``sixteen_bit`` if given.
    Images larger than ``max_pixels`` (default: PIL's
    ``Image.MAX_IMAGE_PIXELS``) fail without being decoded.
    """
    chunks = [paths[i:i + chunk] for i in range(0, len(paths), chunk)]
    check = functools.partial(check_chunk, max_pixels=max_pixels)
    if workers <= 1 or len(chunks) <= 1:
        results = [check(c) for c in chunks]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(check, chunks))
    bad = []
    for failed, sixteen in results:
        bad.extend(failed)
        if sixteen_bit is not None:
            sixteen_bit.extend(sixteen)
    return bad


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    cfg = load_config(args.config)
    found: Dict[str, List[Tuple[str, str]]] = {}
    for split in args.splits:
        paths = image_paths(cfg, split, args.data_root)
        if args.limit is not None:
            paths = paths[:args.limit]
        start = time.time()
        sixteen: List[str] = []
        bad = check_paths(
            paths,
            args.workers,
            sixteen_bit=sixteen,
            max_pixels=args.max_pixels)
        seconds = time.time() - start
        rate = len(paths) / seconds if seconds > 0 else float('inf')
        print(f'{split}: {len(paths)} images decoded in {seconds:.1f} s '
              f'({rate:.0f} images/s), {len(bad)} failed', flush=True)
        for path, reason in bad:
            print(f'  {path}: {reason}')
        if sixteen:
            print(f'{split}: {len(sixteen)} images have 16 bits per channel '
                  '(training scales them to 8 bits):')
            for path in sixteen:
                print(f'  {path}')
        found[split] = bad
    return 1 if any(found.values()) else 0


if __name__ == '__main__':
    from auglocal_det.utils.cli import run_with_clean_errors
    from auglocal_det.utils.warning_filters import (
        ignore_pkg_resources_deprecation,
    )
    ignore_pkg_resources_deprecation()

    def _main() -> None:
        sys.exit(main())

    run_with_clean_errors(_main)
