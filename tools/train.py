"""Train a model (ImageNet classifier or detector) from a config file.

Examples::

    python tools/train.py configs/auglocal_r34_imagenet.py
    python tools/train.py configs/mask_rcnn_auglocal_r34_coco.py --amp
    bash tools/dist_train.sh configs/auglocal_r34_imagenet.py 8
"""
import argparse
import os
import os.path as osp
import sys

from mmengine.config import Config, DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

# Importing the package registers its components and the trusted local
# checkpoint loader before any config is parsed.
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from auglocal_det.utils.cli import run_with_clean_errors  # noqa: E402
from auglocal_det.utils.warning_filters import (  # noqa: E402
    ignore_pkg_resources_deprecation,
)

AMP_WRAPPERS = {
    'OptimWrapper': 'AmpOptimWrapper',
    'LocalOptimWrapper': 'AmpLocalOptimWrapper',
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--amp',
        action='store_true',
        default=False,
        help='enable automatic-mixed-precision training')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='scale the learning rate by the actual total batch size')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from the given checkpoint; with no value, resume from '
        'the latest checkpoint in the work dir')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config, key=value pairs such as '
        'train_dataloader.batch_size=64; lists as key="[a,b]"')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    # torch.distributed.launch passes --local-rank (older: --local_rank)
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def enable_amp(cfg: Config) -> None:
    """Switch the config's optimizer wrapper to its mixed-precision twin."""
    wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
    if wrapper in AMP_WRAPPERS.values():
        print(f'--amp: optim_wrapper.type is already {wrapper}')
        return
    if wrapper not in AMP_WRAPPERS:
        raise ValueError(
            f'--amp supports optim_wrapper.type in {sorted(AMP_WRAPPERS)}, '
            f'but the config sets {wrapper!r}')
    cfg.optim_wrapper.type = AMP_WRAPPERS[wrapper]
    cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')


def build_config(args: argparse.Namespace) -> Config:
    """Load the config and apply the command-line options."""
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)

    # work_dir: command line > config > ./work_dirs/<config name>
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])

    if args.amp:
        enable_amp(cfg)

    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg or \
                'base_batch_size' not in cfg.auto_scale_lr:
            raise ValueError(
                f'--auto-scale-lr needs auto_scale_lr.base_batch_size in '
                f'{args.config}')
        cfg.auto_scale_lr.enable = True

    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    return cfg


def main() -> None:
    args = parse_args()
    cfg = build_config(args)
    if 'runner_type' in cfg:
        runner = RUNNERS.build(cfg)
    else:
        runner = Runner.from_cfg(cfg)
    runner.train()


if __name__ == '__main__':
    ignore_pkg_resources_deprecation()
    run_with_clean_errors(main)
