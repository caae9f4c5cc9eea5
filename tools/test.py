"""Evaluate a checkpoint (ImageNet classifier or detector) on a test set.

Examples::

    python tools/test.py configs/mask_rcnn_auglocal_r34_coco.py \
        work_dirs/mask_rcnn_auglocal_r34_coco/epoch_12.pth
    bash tools/dist_test.sh configs/auglocal_r34_imagenet.py ckpt.pth 8

The metrics are printed, logged to ``<work_dir>/<timestamp>/`` and, with
``--out-metrics``, written to a JSON file (what
``tools/analysis_tools/gather_results.py`` reads).
"""
import argparse
import json
import os
import os.path as osp
import sys

from mmengine.registry import RUNNERS

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from auglocal_det.engine.runner import (  # noqa: E402
    LocalRunner,
    trusted_checkpoints,
)
from auglocal_det.errors import InputError, InputFileNotFoundError  # noqa: E402
from auglocal_det.utils.cli import (  # noqa: E402
    CfgOptionsAction,
    add_trust_checkpoint_option,
    load_config,
    run_with_clean_errors,
)
from auglocal_det.utils.config_errors import (  # noqa: E402
    check_cfg_options,
    check_config_values,
)
from auglocal_det.utils.warning_filters import (  # noqa: E402
    ignore_pkg_resources_deprecation,
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test (and evaluate) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--work-dir',
        help='the directory to save the file containing evaluation metrics')
    parser.add_argument(
        '--out',
        type=str,
        help='dump raw predictions to a pickle file (.pkl), as mmdet does')
    parser.add_argument(
        '--out-metrics',
        type=str,
        help='write the evaluation metrics to this JSON file')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=CfgOptionsAction,
        help='override settings of the config, key=value pairs; keys the '
        'config does not have are refused')
    add_trust_checkpoint_option(parser)
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def main() -> None:
    args = parse_args()
    if not osp.isfile(args.checkpoint):
        raise InputFileNotFoundError(
            f'checkpoint {args.checkpoint!r} not found')
    cfg = load_config(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        check_cfg_options(cfg, args.cfg_options,
                          cfg.get('default_scope', None))
        cfg.merge_from_dict(args.cfg_options)
    check_config_values(cfg, training=False)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    cfg.load_from = args.checkpoint
    cfg.resume = False

    if args.out is not None:
        if not args.out.endswith(('.pkl', '.pickle')):
            raise InputError(f'--out must end in .pkl, got {args.out!r}')
        cfg.test_evaluator = _as_list(cfg.test_evaluator)
        cfg.test_evaluator.append(
            dict(type='DumpResults', out_file_path=args.out))

    if 'runner_type' in cfg:
        runner = RUNNERS.build(cfg)
    else:
        runner = LocalRunner.from_cfg(cfg)
    with trusted_checkpoints([args.checkpoint]
                             if args.trust_checkpoint else []):
        metrics = runner.test()

    if args.out_metrics:
        out_dir = osp.dirname(osp.abspath(args.out_metrics))
        os.makedirs(out_dir, exist_ok=True)
        payload = dict(
            config=args.config,
            checkpoint=args.checkpoint,
            metrics={k: _to_builtin(v)
                     for k, v in metrics.items()})
        with open(args.out_metrics, 'w') as f:
            json.dump(payload, f, indent=2)
        print(f'metrics written to {args.out_metrics}')


def _as_list(evaluator):
    return list(evaluator) if isinstance(evaluator, (list, tuple)) \
        else [evaluator]


def _to_builtin(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


if __name__ == '__main__':
    ignore_pkg_resources_deprecation()
    run_with_clean_errors(main)
