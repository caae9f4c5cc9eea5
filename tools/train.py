"""Train a model (ImageNet classifier or detector) from a config file.

Examples::

    python tools/train.py configs/auglocal_r34_imagenet.py
    python tools/train.py configs/mask_rcnn_auglocal_r34_coco.py --amp
    bash tools/dist_train.sh configs/auglocal_r34_imagenet.py 8
    bash tools/slurm_train.sh PARTITION JOB configs/auglocal_r34_imagenet.py \
        work_dirs/auglocal_r34_imagenet

Exit status: 0 when training ended, 1 for an input error (one line on
stderr), 75 when a pre-emption signal (SIGTERM, SIGUSR1) stopped the run
after saving a checkpoint that ``--resume`` continues from.
"""
import argparse
import os
import os.path as osp
import sys

from mmengine.config import Config
from mmengine.registry import RUNNERS

# Importing the package registers its components before any config is
# parsed.
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from auglocal_det.engine.runner import (  # noqa: E402
    LocalRunner,
    named_resume_checkpoint,
    resolve_resume_checkpoint,
    trusted_checkpoints,
)
from auglocal_det.errors import InputError  # noqa: E402
from auglocal_det.utils.cli import (  # noqa: E402
    CfgOptionsAction,
    add_trust_checkpoint_option,
    load_config,
    run_with_clean_errors,
)
from auglocal_det.utils.config_errors import (  # noqa: E402
    check_cfg_options,
    check_config_values,
    check_switched_types,
    unknown_type_error,
)
from auglocal_det.utils.optim_wrapper_types import AMP_WRAPPERS  # noqa: E402
from auglocal_det.utils.warning_filters import (  # noqa: E402
    ignore_pkg_resources_deprecation,
)


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
        '--resume-fallback',
        action='store_true',
        help='with --resume: if the checkpoint is corrupt, truncated or '
        'missing, resume from the newest good checkpoint of its folder '
        'instead of stopping (logged)')
    parser.add_argument(
        '--overwrite',
        action='store_true',
        help='start a new run (without --resume) in a work dir that holds '
        'the checkpoints of an earlier run, removing them first; the '
        'export at the end may then replace an earlier export')
    add_trust_checkpoint_option(
        parser, 'the checkpoint named by --resume (or load_from)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=CfgOptionsAction,
        help='override settings of the config, key=value pairs such as '
        'train_dataloader.batch_size=64; lists as key="[a,b]"; keys the '
        'config does not have are refused')
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
        raise InputError(
            f'--amp supports optim_wrapper.type in {sorted(AMP_WRAPPERS)}, '
            f'but the config sets {wrapper!r}')
    cfg.optim_wrapper.type = AMP_WRAPPERS[wrapper]
    cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')


def build_config(args: argparse.Namespace) -> Config:
    """Load the config and apply the command-line options."""
    cfg = load_config(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        # misspelt keys and the file's own variables would change nothing
        check_cfg_options(cfg, args.cfg_options,
                          cfg.get('default_scope', None))
        cfg.merge_from_dict(args.cfg_options)
        # a type switched here keeps the other keys of the old dict
        check_switched_types(cfg, args.cfg_options,
                             cfg.get('default_scope', None))

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
            raise InputError(
                f'--auto-scale-lr needs auto_scale_lr.base_batch_size in '
                f'{args.config}')
        cfg.auto_scale_lr.enable = True

    if args.overwrite:
        if args.resume is not None:
            raise InputError('--overwrite starts a new run; it cannot be '
                             'combined with --resume')
        hooks = cfg.setdefault('default_hooks', {})
        if hooks.get('work_dir_lock') is None:
            hooks['work_dir_lock'] = dict(type='WorkDirLockHook')
        hooks['work_dir_lock']['overwrite'] = True
        for hook in cfg.get('custom_hooks', None) or []:
            if hook.get('type') == 'ExportBackboneHook':
                hook['overwrite'] = True
    if args.resume_fallback and args.resume is None:
        raise InputError('--resume-fallback only applies to --resume')

    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    if args.resume is not None:
        # a corrupt, truncated or missing checkpoint: one message naming it
        # and the previous good one (or, with --resume-fallback, use that)
        checked = resolve_resume_checkpoint(cfg.work_dir, args.resume,
                                            args.resume_fallback,
                                            args.trust_checkpoint)
        if checked is not None:
            cfg.load_from = checked
    # a schedule that trains nothing, a batch size of 0, lr=nan, ...
    check_config_values(cfg)
    return cfg


def main() -> None:
    args = parse_args()
    cfg = build_config(args)
    # --trust-checkpoint vouches for the file the user named, never for
    # one that --resume-fallback picked instead
    trusted = []
    if args.trust_checkpoint:
        trusted.append(
            named_resume_checkpoint(cfg.work_dir, args.resume)
            if args.resume is not None else cfg.get('load_from'))
    try:
        if 'runner_type' in cfg:
            runner = RUNNERS.build(cfg)
        else:
            runner = LocalRunner.from_cfg(cfg)
        with trusted_checkpoints(trusted):
            runner.train()
    except KeyError as exc:  # a type name that is not registered
        error = unknown_type_error(exc, cfg)
        if error is None:
            raise
        raise error from exc


if __name__ == '__main__':
    ignore_pkg_resources_deprecation()
    run_with_clean_errors(main)
