"""Check COCO instance annotation files before a detection run.

Reports what mmdet's ``CocoDataset`` would silently drop or mislabel:
degenerate boxes, broken polygons, annotations of unknown categories or
images, image or annotation ids that appear twice (merged files), files
or classes whose every annotation is a crowd region, images without a
file (with ``--config`` or ``--img-dir``), and class names of the config
that are missing from the file or listed in another order. Exits with
status 1 if there are errors.

Examples::

    # the train/val files and classes of a detection config
    python tools/misc/check_coco.py --config configs/mask_rcnn_auglocal_r34_coco.py
    # files and classes given directly
    python tools/misc/check_coco.py data/coco/annotations/instances_val2017.json \\
        --classes person bicycle car --img-dir data/coco/val2017
"""  # noqa: E501
import argparse
import json
import os.path as osp
import sys
from typing import Dict, List, Optional, Sequence, Tuple

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)

from mmengine.config import Config  # noqa: E402

from auglocal_det.datasets.checked_coco import (  # noqa: E402
    CocoReport,
    check_coco_annotations,
)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Check COCO instance annotation files')
    parser.add_argument('ann_files', nargs='*', help='annotation files')
    parser.add_argument(
        '--classes', nargs='+', help='class names in label order')
    parser.add_argument(
        '--config',
        help='take the annotation files (train/val/test dataloaders) and '
        'the classes (metainfo.classes) from this config')
    parser.add_argument(
        '--img-dir',
        help='the folder of the images of the annotation files given on '
        'the command line (with --config: data_root + data_prefix.img)')
    parser.add_argument(
        '--max-invalid-ratio',
        type=float,
        default=0.01,
        help='fraction of invalid annotations above which they are an '
        'error (default: 0.01)')
    args = parser.parse_args(argv)
    if not args.ann_files and not args.config:
        parser.error('give annotation files or --config')
    return args


def files_from_config(
        path: str
) -> Tuple[List[str], Optional[List[str]], Dict[str, str]]:
    """Annotation files, class names and image folders (per annotation
    file) of a detection config."""
    cfg = Config.fromfile(path)
    files, classes, img_dirs = [], None, {}
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg.get(key)
        if not loader or 'dataset' not in loader:
            continue
        dataset = loader.dataset
        while 'dataset' in dataset:  # dataset wrappers
            dataset = dataset.dataset
        ann_file = dataset.get('ann_file')
        if not ann_file:
            continue
        root = dataset.get('data_root') or ''
        full = ann_file if osp.isabs(ann_file) else osp.join(root, ann_file)
        if full not in files:
            files.append(full)
            prefix = (dataset.get('data_prefix') or {}).get('img')
            if prefix is not None:
                img_dirs[full] = prefix if osp.isabs(prefix) else osp.join(
                    root, prefix)
        metainfo = dataset.get('metainfo') or {}
        if classes is None and metainfo.get('classes'):
            classes = list(metainfo['classes'])
    return files, classes, img_dirs


def check_file(path: str,
               classes: Optional[Sequence[str]],
               max_invalid_ratio: float,
               img_dir: Optional[str] = None) -> CocoReport:
    """Read and check one file (a missing or unreadable file is an error).
    """
    if not osp.isfile(path):
        report = CocoReport(path)
        report.errors.append(f'annotation file {path!r} not found')
        return report
    try:
        with open(path, encoding='utf-8') as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        report = CocoReport(path)
        report.errors.append(f'cannot read {path!r} as JSON: {exc}')
        return report
    return check_coco_annotations(
        data,
        classes=classes,
        ann_file=path,
        max_invalid_ratio=max_invalid_ratio,
        img_dir=img_dir)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    files, classes = list(args.ann_files), args.classes
    img_dirs = {f: args.img_dir for f in files if args.img_dir}
    if args.config:
        cfg_files, cfg_classes, cfg_dirs = files_from_config(args.config)
        files += [f for f in cfg_files if f not in files]
        classes = classes or cfg_classes
        for path, folder in cfg_dirs.items():
            img_dirs.setdefault(path, folder)
    failed = False
    for path in files:
        report = check_file(path, classes, args.max_invalid_ratio,
                            img_dirs.get(path))
        print(report.format())
        failed |= bool(report.errors)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
