"""Export the backbone of a local-learning classifier checkpoint.

Writes ``backbone.pth`` (mmdet ``ResNet`` / ``LocalResNet`` keys, for a
detector's ``init_cfg=dict(type='Pretrained', checkpoint=...)``),
``torchvision.pth`` (torchvision ``resnetNN`` keys incl. ``fc``) and
``backbone.json`` (rule, auxiliary depth, K, epochs, val top-1, SHA-256 of
the checkpoint), the same files ``ExportBackboneHook`` writes at the end of
training.

The checkpoint is read with the package's safe loader (weights and the
types of its checkpoints only; ``--trust-checkpoint`` for a file you vouch
for), and the export replaces an export of another checkpoint only with
``--overwrite``.

Example::

    python tools/model_converters/export_backbone.py \\
        work_dirs/auglocal_r34_imagenet/epoch_200.pth --out-dir export/
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(
    osp.abspath(__file__)))))

from auglocal_det.errors import InputError  # noqa: E402
from auglocal_det.export import (  # noqa: E402
    NotAClassifierCheckpointError,
    export_checkpoint,
)
from auglocal_det.utils.cli import add_trust_checkpoint_option  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Export the backbone of a LocalImageClassifier '
        'checkpoint (backbone.pth, torchvision.pth, backbone.json)')
    parser.add_argument('checkpoint', help='checkpoint written by '
                        'tools/train.py with an ImageNet config')
    parser.add_argument(
        '--out-dir',
        help='output folder (default: export/ next to the checkpoint)')
    parser.add_argument(
        '--no-torchvision',
        action='store_true',
        help='do not write torchvision.pth')
    parser.add_argument(
        '--overwrite',
        action='store_true',
        help='replace an export of another checkpoint in the output folder '
        '(by default it is kept and the export refused)')
    add_trust_checkpoint_option(parser)
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    try:
        meta = export_checkpoint(
            args.checkpoint,
            out_dir=args.out_dir,
            torchvision=not args.no_torchvision,
            overwrite=args.overwrite,
            trust=args.trust_checkpoint)
    except (FileNotFoundError, RuntimeError, NotAClassifierCheckpointError,
            InputError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    for name, info in meta['files'].items():
        print(f'{name}: {info["path"]} ({info["keys"]} tensors; loads into '
              f'{info["load_into"]})')
    out_dir = osp.dirname(meta['files']['backbone.pth']['path'])
    print(f'backbone.json: {osp.join(out_dir, "backbone.json")} (rule '
          f'{meta.get("rule")}, K={meta.get("num_local_modules")}, epoch '
          f'{meta.get("epoch")}, val top-1 {meta.get("val_top1")})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
